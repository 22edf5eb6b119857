-- A leak inside a C library called through ffi.load: 123 bytes lost in leak_malloc.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_malloc(123)
