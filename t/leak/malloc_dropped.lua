-- A block from ffi.C.malloc, dropped: 100 bytes definitely lost, allocated by malloc.
-- expect: exit 42; total definite 1 100; one definite bytes=100 alloc=malloc
local ffi = require "ffi"
dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
local p = ffi.C.malloc(100)
p = nil
