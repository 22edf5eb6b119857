-- Two 32-byte blocks pointing at each other, dropped: one definite, one indirect.
-- expect: total definite 1 32; total indirect 1 32; one indirect leak_cycle
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_cycle()
