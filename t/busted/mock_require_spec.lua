-- A spec that fakes a missing module by replacing require, as specs do; one test leaks.
local ffi = require "ffi"
ffi.cdef [[ char *strdup(const char *); ]]
local real_require = require

describe("a spec that mocks require", function()
   before_each(function()
      _G.require = function(name)  -- only what is loaded already, and the fake
         if name == "fake.module" then return {answer = 42} end
         if package.loaded[name] ~= nil then return package.loaded[name] end
         error("module '" .. name .. "' is not available in this test", 2)
      end
   end)
   after_each(function() _G.require = real_require end)

   it("gets its fake module", function()
      assert.are.equal(42, require("fake.module").answer)
   end)

   it("runs again with the mock in place", function()
      assert.has_error(function() require("not.loaded.anywhere") end)
   end)

   it("leaks a copy", function()
      ffi.C.strdup("a string of 25 characters")   -- line 25
   end)
end)
