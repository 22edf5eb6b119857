-- 4 threads started by C code allocate and free 20000 blocks each at the same time, each
-- dropping every 10th: exactly 8000 blocks lost, in stress_main.
-- engines: tracker (80,000 allocations from 4 threads: minutes under Valgrind)
-- expect: total definite 8000 344004; blocks definite stress_main 8000
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
assert(leaky.leak_from_threads(4, 20000, 10, 40) == 0)
