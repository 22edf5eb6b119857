-- assert.no_leaks inside a busted suite: one clean test, one leaky test.
require "ljleak.assert"
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]

describe("no_leaks", function()
   it("passes when fn frees what it allocates", function()
      assert.no_leaks(function() ffi.C.free(ffi.C.malloc(10)) end)
   end)
   it("fails with the report when fn leaks", function()
      assert.no_leaks(function() ffi.C.malloc(10) end)  -- line 11
   end)
end)
