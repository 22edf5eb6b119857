-- 16 children each start 10 threads and exit before those have run (t/leak/libleaky.c): the exit
-- check waits for threads being started, whose stacks hold the 88-byte blocks they were given.
-- engines: tracker (the race is the tracker's: Valgrind runs one thread at a time)
-- expect: exit 0; total definite 0 0; blocks reachable gift_for_thread 160; processes 17
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
assert(leaky.exit_while_threads_start(16, 10) == 0)
