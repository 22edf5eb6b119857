-- Workload (b): 3M ffi.gc(malloc, free) objects, with periodic full collections.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C
local N = tonumber(arg and arg[1]) or 3e6
local keep = {}  -- luacheck: ignore 241 (kept live on purpose)
for i = 1, N do
   local p = ffi.gc(C.malloc(32 + i % 96), C.free)
   keep[i % 1000 + 1] = p
   if i % 100000 == 0 then collectgarbage() end
end
