-- assert.stable under busted: a growing cache fails with the growth report, a loop returning to
-- the same live set passes. Run by t/growth_spec.lua under `ljleak busted`.
local ffi = require "ffi"
require "ljleak.assert"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

describe("assert.stable", function()
   it("fails on a growing cache", function()
      local cache = {}
      local ok, err = pcall(assert.stable, function(i) cache[i] = ffi.gc(C.malloc(96), C.free) end)
      assert.is_false(ok)
      assert.are.equal(200, #cache)   -- the default number of iterations
      io.stderr:write("MESSAGE<<", tostring(err), ">>\n")
   end)

   it("passes on a loop that frees what it allocates", function()
      assert.stable(function() C.free(C.malloc(96)) end, {iterations = 50, warmup = 5})
   end)
end)
