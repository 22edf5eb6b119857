-- Two blocks from ffi.C.malloc dropped at two lines of the main chunk, with the same C stack and
-- only their Lua lines to tell them apart (111 bytes at line 9, 222 at line 10), and a leak inside
-- libleaky (leak_malloc, 123 bytes, line 11). The arguments say which happen: a, b, lib.
local ffi = require "ffi"
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
local want = {}
for _, a in ipairs(arg) do want[a] = true end
local p
if want.a then p = ffi.C.malloc(111) end
if want.b then p = ffi.C.malloc(222) end
if want.lib then leaky.leak_malloc(123) end
p = nil
