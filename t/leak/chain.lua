-- A (32 bytes) -> B (48 bytes), A dropped: A definite, B indirect.
-- expect: total definite 1 32; one definite leak_chain bytes=32; one indirect leak_chain bytes=48; total indirect 1 48
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_chain()
