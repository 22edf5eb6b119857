-- A block dropped by a thread that C code started: 321 bytes lost in leaky_thread_main.
-- expect: total definite 1 321; one definite leaky_thread_main
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
assert(leaky.leak_in_thread(321) == 0)
