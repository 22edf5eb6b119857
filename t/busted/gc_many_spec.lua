-- 20,000 dropped ffi.gc buffers in one test: every finalizer runs, and memory stays flat.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local function rss_kib()
   local f = assert(io.open("/proc/self/statm", "rb"))
   local pages = tonumber(f:read("*a"):match("^%d+ (%d+)"))
   f:close()
   return pages * 4
end

describe("many ffi.gc buffers", function()
   it("are all finalized", function()
      local freed = 0
      local function release(p) freed = freed + 1 C.free(p) end
      collectgarbage()
      local before = rss_kib()
      for _ = 1, 20000 do
         local p = ffi.gc(C.malloc(4096), release)
         ffi.fill(p, 4096, 1)
      end
      collectgarbage()
      collectgarbage()
      assert.are.equal(20000, freed)
      assert.is_true(rss_kib() - before < 20000, "RSS grew by " .. (rss_kib() - before) .. " KiB")
   end)
end)
