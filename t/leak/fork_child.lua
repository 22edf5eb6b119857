-- A forked child leaks 222 bytes and exits; the parent leaks nothing.
-- expect: exit 42; total definite 1 222; one definite leak_in_child in_child=1
-- expect[tracker]: pids_all 2
-- expect[valgrind]: processes 2
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
assert(leaky.leak_in_child(222) == 0)
