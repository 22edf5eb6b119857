-- strdup's copy dropped by C code: 12 bytes lost in leak_strdup (via strdup).
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_strdup("hello, leak")
