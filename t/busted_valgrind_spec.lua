-- `ljleak busted --engine=valgrind`: which test leaked, through Valgrind (not run under the
-- tracker's self-check: an outer tracker would be preloaded into Valgrind).
local cjson = require "cjson"
local h = require "t.helper"

local ljleak_busted = h.ljleak_busted

describe("ljleak busted --engine=valgrind", function()
   -- Valgrind has no tags: the helper runs a leak check at each test's edges and marks the test in
   -- Valgrind's output; each record of those checks belongs to the test it follows (no Lua lines
   -- under Valgrind).
   local function tests_lost(r)
      local t = {}
      for _, rec in ipairs(h.records(r, "definite")) do
         if rec.suppressed_by == cjson.null then
            local name = rec.test ~= cjson.null and rec.test or "none"
            t[name] = (t[name] or 0) + rec.bytes
         end
      end
      return t
   end

   it("attributes each leak to its test and fails that test in busted's output", function()
      local r, code, out = ljleak_busted({"-o", "TAP", "t/busted/leaky_spec.lua"}, {"--engine=valgrind"})
      assert.are.equal(42, code)
      assert.are.same({
         ["parser > handles huge input"] = 4096,
         ["parser > with a cache > hits"] = 300,
         ["parser > leaks and fails"] = 77,
         ["t/busted/leaky_spec.lua"] = 11,
      }, tests_lost(r))
      assert.matches("\nok 1 - parser parses small input\n", "\n" .. out, 1, true)
      assert.matches("not ok 2 - parser handles huge input\n# t/busted/leaky_spec.lua @ 15\n"
         .. "# Failure message: t/busted/leaky_spec.lua:15: ljleak: the test leaked:\n"
         .. "# Valgrind found 4096 bytes definitely lost in this test", out, 1, true)
      assert.matches("# Valgrind found 300 bytes definitely lost in this test", out, 1, true)
      -- the tests that ran or were pending, for the JUnit report's test cases
      local ran = {}
      for _, t in ipairs(r.tests) do ran[#ran + 1] = ("%s @ %s:%d, %s"):format(t.name, t.file, t.line, t.status) end
      assert.are.same({"parser > parses small input @ t/busted/leaky_spec.lua:11, success",
                       "parser > handles huge input @ t/busted/leaky_spec.lua:15, failure",
                       "parser > with a cache > hits @ t/busted/leaky_spec.lua:27, failure",
                       "parser > leaks and fails @ t/busted/leaky_spec.lua:32, failure",
                       "parser > is not written yet @ t/busted/leaky_spec.lua:37, pending",
                       "parser > stops half way @ t/busted/leaky_spec.lua:39, pending",
                       "parser > parses small input @ t/busted/leaky_spec.lua:45, success"}, ran)
   end)

   it("counts a lost block's own bytes as definite, and the block it held as indirect, in its test", function()
      -- Valgrind's leak checks between tests say "64 (+64) (32 (+32) direct, 32 (+32) indirect) bytes"
      local r, code = ljleak_busted({"t/busted/nested_spec.lua"}, {"--engine=valgrind"})
      assert.are.equal(42, code)
      local test = "nested > loses a block holding a block"
      assert.are.same({[test] = 32}, tests_lost(r))
      assert.are.same({blocks = 1, bytes = 32}, r.summary.definite)
      assert.are.same({blocks = 1, bytes = 32}, r.summary.indirect)
      local lost = h.one(r, "definite")
      assert.are.same({test, "malloc"}, {lost.test, lost.frames[1]["function"]})
      assert.are.same({test, 32}, {h.one(r, "indirect").test, h.one(r, "indirect").bytes})
   end)

   it("gives no unsuppressed leak for a clean suite that loads lfs and cjson", function()
      local r, code = ljleak_busted({"t/busted/clean_spec.lua"}, {"--engine=valgrind"})
      assert.are.equal(0, code)
      assert.are.same({}, tests_lost(r))
      assert.are.same({blocks = 0, bytes = 0}, r.summary.definite)
   end)
end)

