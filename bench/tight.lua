-- Tightest loop: 3e7 malloc/free pairs of 1-512 bytes from one compiled loop (issue 11: the
-- tracker's cost per pair, nothing else to hide it).
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C
local N = tonumber(arg and arg[1]) or 3e7
for i = 1, N do C.free(C.malloc(i % 512 + 1)) end
