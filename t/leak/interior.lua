-- Only a pointer into the middle of a 64-byte block survives: possibly lost.
-- expect: exit 0; total definite 0 0; one possible leak_interior bytes=64; total possible 1 64
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_interior(64)
