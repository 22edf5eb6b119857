-- Leaky tests inside insulate and expose blocks, among clean ones (run with --shuffle and the
-- json/junit output handlers; no pending test here: busted's json handler cannot encode one).
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]

insulate("an insulated block", function()
   it("leaks inside insulate", function() ffi.C.malloc(200) end)
   it("is clean", function() end)
end)

expose("an exposed block", function()
   it("leaks inside expose", function() ffi.C.malloc(400) end)
end)

describe("plain", function()
   it("frees what it takes", function() ffi.C.free(ffi.C.malloc(10)) end)
   it("builds strings", function()
      local t = {}
      for i = 1, 100 do t[i] = tostring(i) end
      assert.are.equal(100, #t)
   end)
end)
