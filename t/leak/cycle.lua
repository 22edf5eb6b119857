-- Two 32-byte blocks pointing at each other, dropped: one definite, one indirect.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_cycle()
