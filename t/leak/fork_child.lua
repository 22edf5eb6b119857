-- A forked child leaks 222 bytes and exits; the parent leaks nothing.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
assert(leaky.leak_in_child(222) == 0)
