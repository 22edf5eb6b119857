-- A clean suite that loads Lua C modules which allocate when loaded (lfs, cjson).
local lfs = require "lfs"
local cjson = require "cjson"

describe("C modules", function()
   it("lists a directory", function()
      local n = 0
      for _ in lfs.dir(".") do n = n + 1 end
      assert.is_true(n > 0)
   end)
   it("round-trips JSON", function()
      assert.are.same({a = {1, 2}}, cjson.decode(cjson.encode({a = {1, 2}})))
   end)
end)
