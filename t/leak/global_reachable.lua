-- A block held by a C library's global: reachable, not a leak.
-- expect: exit 0; total definite 0 0; one reachable hold_in_global bytes=555
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.hold_in_global(555)
