-- 1000 blocks owned by ffi.gc finalizers, still referenced at exit: lua_close frees them all.
local ffi = require "ffi"
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
local keep = {}
for i = 1, 1000 do
  keep[i] = ffi.gc(leaky.make_buffer(50), leaky.free_buffer)
end
for i = 1, 500 do keep[i] = nil end
collectgarbage()
