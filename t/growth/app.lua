-- A module for `ljleak soak --lua=t.growth.app.handle` (and .quiet): handle keeps one 96-byte
-- FFI block per call in a module-level table (line 9); quiet frees what it allocates.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C
local M = {}
local seen = {}
function M.handle()
   seen[#seen + 1] = ffi.gc(C.malloc(96), C.free)
end
function M.quiet()
   C.free(C.malloc(96))
end
return M
