-- calloc(10, 12) dropped: 120 bytes lost in leak_calloc.
-- expect: total definite 1 120; one definite leak_calloc alloc=calloc
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_calloc(10, 12)
