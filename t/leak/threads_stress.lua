-- 4 threads started by C code allocate and free 20000 blocks each at the same time, each
-- dropping every 10th: exactly 8000 blocks lost, in stress_main.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
assert(leaky.leak_from_threads(4, 20000, 10, 40) == 0)
