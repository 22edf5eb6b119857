-- Workload (a): 7M ffi.C.malloc/free of random sizes 16-4096, with some blocks kept live.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C
local N = tonumber(arg and arg[1]) or 7e6
local LIVE = 4096
local live = ffi.new("void *[?]", LIVE)
local seed = 12345
for _ = 1, N do
   seed = (seed * 1103515245 + 12345) % 2147483648
   local size = 16 + seed % 4081
   local slot = seed % LIVE
   if live[slot] ~= nil then C.free(live[slot]) end
   live[slot] = C.malloc(size)
end
for i = 0, LIVE - 1 do C.free(live[i]) end
