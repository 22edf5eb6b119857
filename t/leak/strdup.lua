-- strdup's copy dropped by C code: 12 bytes lost in leak_strdup (via strdup).
-- expect: total definite 1 12; one definite leak_strdup calls=strdup
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_strdup("hello, leak")
