-- One test loses a 32-byte block that holds the only pointer to another 32-byte block: under
-- --engine=valgrind, 32 bytes definitely lost and 32 indirectly lost in that test, not 64.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

describe("nested", function()
   it("keeps its blocks", function()
      C.free(C.malloc(16))
   end)

   it("loses a block holding a block", function()
      local outer = ffi.cast("void **", C.malloc(32))   -- line 13: definitely lost
      outer[0] = C.malloc(32)                          -- line 14: indirectly lost
   end)
end)
