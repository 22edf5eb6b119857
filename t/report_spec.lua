-- busted spec for the report step: a run with ten thousand distinct leak stacks (t/leak/stacks.c)
-- gives every record in the JSON and a capped text report; `ljleak report` on bad input says what
-- it expected and where the file broke.
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
   local argv = {h.BIN}
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
      assert.are.equal(50, count_lines(err, "^definite: 1024 bytes in 1 block, pid %d+ %(loss record %d+ of 10000%)$"))
      for i = 1, 50 do   -- numbered in order, the biggest first
         assert.matches(("\ndefinite: 1024 bytes in 1 block, pid %%d+ %%(loss record %d of 10000%%)\n"):format(i), err)
      end
      assert.are.equal(50, count_lines(err, "^definite: "))
      assert.matches(("\n... and %d more definite records (%d bytes in %d blocks); see --json\n"):format(
         N - 50, total - 50 * 1024, N - 50), err, 1, true)
      assert.matches("\n    definite: " .. total .. " bytes in " .. N .. " blocks\n", err, 1, true)
      -- `ljleak report` says the same, pointing at the file, and judges it the same.
      local rcode, out = ljleak({"report", json})
      assert.are.equal(42, rcode)
      assert.are.equal(50, count_lines(out, "^definite: 1024 bytes in 1 block, pid %d+ %(loss record %d+ of 10000%)$"))
      assert.matches(("... and %d more definite records (%d bytes in %d blocks); see %s\n"):format(
         N - 50, total - 50 * 1024, N - 50, json), out, 1, true)
   end)
end)

describe("ljleak report on bad input", function()
   -- A real report of four records (t/leak/stacks.c with 4 blocks), to break in places.
   local good
   setup(function()
      local tmp = h.tmpdir()
      local code = ljleak({"run", "--json=" .. tmp .. "/r.json", "--", STACKS, "4"})
      assert.are.equal(42, code)
      good = h.read_file(tmp .. "/r.json")
      h.rmtree(tmp)
      assert.are.equal(4, #cjson.decode(good).leaks)
   end)

   -- `ljleak report FILE` on CONTENT: exit 2 and one line "ljleak: FILE: MESSAGE".
   local function refused(content, message)
      local file = dir .. "/bad.json"
      h.write_file(file, content)
      local code, out, err = ljleak({"report", file})
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal(("ljleak: %s: %s\n"):format(file, message), err)
   end

   local function broken(change)
      local data = cjson.decode(good)
      change(data)
      return cjson.encode(data)
   end

   it("reads the good one", function()
      local file = dir .. "/good.json"
      h.write_file(file, good)
      local code, out = ljleak({"report", file})
      assert.are.equal(42, code)
      assert.matches("\n    definite: 80 bytes in 4 blocks\n", out, 1, true)   -- 8 + 16 + 24 + 32
   end)

   it("names a directory", function()
      local code, out, err = ljleak({"report", dir})
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal(("ljleak: %s: is a directory; expected a JSON report file\n"):format(dir), err)
   end)

   it("names the JSON path where the shape is wrong", function()
      refused(broken(function(d) d.leaks[4].frames = "malloc" end),
              'leaks[3].frames: expected an array, found a string ("malloc")')
      refused(broken(function(d) d.leaks[2].frames[3].line = "12" end),
              'leaks[1].frames[2].line: expected an integer, found a string ("12")')
      refused(broken(function(d) d.leaks[1].kind = "lost" end),
              'leaks[0].kind: expected a leak kind (definite, indirect, possible, reachable), found a string ("lost")')
      refused(broken(function(d) d.leaks[1].bytes = nil end), 'leaks[0]: missing "bytes"')
      refused(broken(function(d) d.summary.definite = 80 end),
              "summary.definite: expected an object, found a number (80)")
      refused(broken(function(d) d.leaks = {a = 1} end), "leaks: expected an array, found an object")
      refused("[1, 2]", 'not an ljleak report (expected a JSON object with "tool": "ljleak")')
   end)

   it("says a truncated file ends early", function()
      refused(good:sub(1, 700), "the JSON ends early, at byte 700 (a truncated file?)")
      refused("", "empty; expected a JSON report (ljleak run --json)")
   end)

   it("names another schema version", function()
      refused(broken(function(d) d.schema = 2 end), "report schema 2; this ljleak reads schema 1")
      refused(broken(function(d) d.schema = 0 end), "report schema 0; this ljleak reads schema 1")
   end)
end)
