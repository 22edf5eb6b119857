-- 1000 blocks owned by ffi.gc finalizers, still referenced at exit: lua_close frees them all.
-- expect: exit 0; total definite 0 0
-- expect[tracker]: none definite make_buffer; none indirect make_buffer
-- expect[tracker]: none possible make_buffer; none reachable make_buffer
-- expect[valgrind]: clean
local ffi = require "ffi"
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
local keep = {}
for i = 1, 1000 do
   keep[i] = ffi.gc(leaky.make_buffer(50), leaky.free_buffer)
end
for i = 1, 500 do keep[i] = nil end
collectgarbage()
