-- 20,000 dropped ffi.gc buffers in one test: every finalizer runs, and memory stays flat (the
-- heap's bytes in use, as glibc counts them: RSS depends on trimming and huge pages).
local ffi = require "ffi"
ffi.cdef [[
void *malloc(size_t); void free(void *);
struct mallinfo2 { size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost; };
struct mallinfo2 mallinfo2(void);
]]
local C = ffi.C

local function in_use_kib()
   local m = C.mallinfo2()
   return tonumber(m.uordblks + m.hblkhd) / 1024
end

describe("many ffi.gc buffers", function()
   it("are all finalized", function()
      local freed = 0
      local function release(p) freed = freed + 1 C.free(p) end
      collectgarbage()
      local before = in_use_kib()
      for _ = 1, 20000 do
         local p = ffi.gc(C.malloc(4096), release)
         ffi.fill(p, 4096, 1)
      end
      collectgarbage()
      collectgarbage()
      assert.are.equal(20000, freed)
      local grew = in_use_kib() - before
      assert.is_true(grew < 8192, ("the heap in use grew by %d KiB"):format(grew))
   end)
end)
