-- A 4 MiB block (above glibc's mmap threshold), dropped.
-- expect: total definite 1 4194304; one definite leak_big
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_big()
