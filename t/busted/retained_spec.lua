-- ffi.gc objects that are still alive after a test are no leak: a module-level cache the test
-- fills, the before_each/after_each fixture, a block the test's after_each frees. A finalizer that
-- keeps its own cdata alive (LuaJIT issue 896) is a bug, reported where it was registered.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local cache = {}
local function new_buffer(n) return ffi.gc(C.malloc(n), C.free) end

describe("retained", function()
   it("fills a module-level cache", function()
      cache[#cache + 1] = new_buffer(48)
   end)

   describe("with a fixture", function()
      local b
      before_each(function() b = new_buffer(64) end)
      after_each(function() b = nil end)
      it("uses it", function() assert.is_not_nil(b) end)
   end)

   describe("with a block freed by after_each", function()
      local addr  -- a number: no pointer to the block is left once the test body returns
      after_each(function() C.free(ffi.cast("void *", addr)) end)
      it("allocates it", function() addr = tonumber(ffi.cast("uintptr_t", C.malloc(72))) end)
   end)

   it("registers a finalizer that holds its own cdata", function()
      local d
      d = ffi.gc(C.malloc(16), function() C.free(d) end)   -- line 31
   end)
end)
