-- A (32 bytes) -> B (48 bytes), A dropped: A definite, B indirect.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_chain()
