-- Per-test checks that need no collection, and those that still do. A test whose only live memory
-- is ffi.gc'd with ffi.C.free, or held from C's own roots, is settled without collecting; a leak
-- next to such memory, or a C.free finalizer given memory malloc never handed out, still fails its
-- test, with exact bytes and problem.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C
local leaky = dofile("t/leak/leaky.lua")

describe("quick checks", function()
   local weak = setmetatable({}, {__mode = "v"})

   it("leave a test's ffi.gc'd garbage to the collector", function()
      collectgarbage("stop")
      weak[1] = ffi.gc(C.malloc(32), C.free)
   end)

   it("(the garbage was not collected by the check)", function()
      local alive = weak[1] ~= nil
      collectgarbage("restart")
      assert.is_true(alive)
   end)

   it("see a leak next to ffi.gc'd garbage", function()
      local lost = C.malloc(55)                     -- line 25
      for _ = 1, 10 do ffi.gc(C.malloc(32), C.free) end
      assert.is_not_nil(lost)
   end)

   it("pass a block that C holds", function()
      leaky.hold_in_global(66)
   end)

   it("see a C.free finalizer given memory malloc never handed out", function()
      local static = ffi.new("char[16]")
      weak[2] = static
      ffi.gc(ffi.cast("void *", static), C.free)   -- line 37
   end)
end)
