-- busted spec for the report step: a run with ten thousand distinct leak stacks (t/leak/stacks.c)
-- gives every record in the JSON and a capped text report.
-- Run from the checkout: luajit /usr/bin/busted t/report_spec.lua
local cjson = require "cjson"
local h = require "t.helper"

local STACKS = h.ROOT .. "/build/t/leak/stacks"

local dir

before_each(function() dir = h.tmpdir() end)
after_each(function() h.rmtree(dir) end)

-- How many lines of TEXT match PATTERN.
local function count_lines(text, pattern)
   local n = 0
   for line in text:gmatch("[^\n]+") do
      if line:match(pattern) then n = n + 1 end
   end
   return n
end

local function ljleak(args)
   local argv = {"luajit", h.BIN}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   return h.run(argv)
end

describe("a run with 10000 distinct leak stacks", function()
   local N = 10000
   -- Block i has 8 * (1 + i % 128) bytes: the 50 biggest have 1024.
   local total = 0
   for i = 0, N - 1 do total = total + 8 * (1 + i % 128) end

   it("has every record in the JSON, and the 50 biggest in the text report", function()
      local json = dir .. "/r.json"
      local code, _, err = ljleak({"run", "--json=" .. json, "--", STACKS, tostring(N)})
      assert.are.equal(42, code, err)
      local data = cjson.decode(h.read_file(json))
      assert.are.same({blocks = N, bytes = total}, data.summary.definite)
      assert.are.equal(N, #data.leaks)
      local sizes = {}
      for _, rec in ipairs(data.leaks) do
         assert.are.same({"definite", 1, "malloc", "step", "step"},
                         {rec.kind, rec.blocks, rec.frames[1]["function"], rec.frames[2]["function"],
                          rec.frames[3]["function"]})
         sizes[rec.bytes] = (sizes[rec.bytes] or 0) + 1
      end
      assert.are.equal(78, sizes[1024])   -- i = 127 + 128k < 10000
      assert.are.equal(50, count_lines(err, "^definite: 1024 bytes in 1 block, pid %d+$"))
      assert.are.equal(50, count_lines(err, "^definite: "))
      assert.matches(("\n... and %d more definite records (%d bytes in %d blocks); see --json\n"):format(
         N - 50, total - 50 * 1024, N - 50), err, 1, true)
      assert.matches("\n    definite: " .. total .. " bytes in " .. N .. " blocks\n", err, 1, true)
      -- `ljleak report` says the same, pointing at the file.
      local rcode, out = ljleak({"report", json})
      assert.are.equal(0, rcode)
      assert.are.equal(50, count_lines(out, "^definite: 1024 bytes in 1 block, pid %d+$"))
      assert.matches(("... and %d more definite records (%d bytes in %d blocks); see %s\n"):format(
         N - 50, total - 50 * 1024, N - 50, json), out, 1, true)
   end)
end)
