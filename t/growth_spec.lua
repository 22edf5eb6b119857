-- Growth (issue 14): ljleak.stable and assert.stable in the program, with exact slopes and lines.
local cjson = require "cjson"
local h = require "t.helper"

local function printed(script)
   local _, code, err, out = h.ljleak_run({"luajit", script})
   local ok, res = pcall(cjson.decode, (out or ""):match("[^\n]*"))
   assert(ok, ("no JSON from %s (exit %s): %s"):format(script, tostring(code), tostring(err)))
   return res
end

describe("ljleak.stable", function()
   local res
   setup(function() res = printed("t/growth/cache.lua") end)

   it("flags a cache keeping one 96-byte block per call, at its line, slope within 5%", function()
      local c = res.cache
      assert.is_false(c.ok)
      assert.are.equal(1, c.n)
      assert.are.equal("t/growth/cache.lua", c.source)
      assert.are.equal(10, c.line)
      assert.are.equal("malloc", c.frame["function"])
      assert.is_true(math.abs(c.bytes_per_iteration - 96) <= 96 * 0.05, tostring(c.bytes_per_iteration))
      assert.is_true(math.abs(c.blocks_per_iteration - 1) <= 0.05, tostring(c.blocks_per_iteration))
      assert.is_true(c.fit > 0.99)
      assert.are.same({persistent = 1, released = 0}, c.generations)
      assert.are.equal(200, res.cached)
   end)

   it("flags a finalizer closure that keeps its own cdata alive", function()
      local c = res.closure
      assert.is_false(c.ok)
      assert.are.equal(1, c.n)
      assert.are.equal(14, c.line)
      assert.is_true(math.abs(c.bytes_per_iteration - 40) <= 40 * 0.05, tostring(c.bytes_per_iteration))
      assert.are.same({persistent = 1, released = 0}, c.generations)
   end)

   it("stays quiet on a transient-heavy loop, 20 runs in one process", function()
      local t = printed("t/growth/transient.lua")
      assert.are.same({alarms = 0, details = {}}, t)
   end)
end)

describe("memory kept by the allocator", function()
   it("is told apart from a leak: RSS grows, live bytes stay one block", function()
      local f = printed("t/growth/fragment.lua")
      assert.is_true(f.ok)
      assert.are.equal(0, f.n)
      assert.are.equal("allocator", f.verdict)
      assert.are.equal(3000, f.live)
      assert.are.equal(0, f.live_growth)
      assert.is_true(f.rss_growth >= 6 * 1024 * 1024, tostring(f.rss_growth))   -- 128 KiB an iteration
      assert.is_true(f.fordblks >= 6 * 1024 * 1024, tostring(f.fordblks))       -- free, kept in the arena
      assert.matches("while live tracked bytes stayed at 3000 bytes (+0): not a leak, memory kept by the "
         .. "allocator (arena ", f.message, 1, true)
      assert.matches("malloc_trim(0)", f.message, 1, true)
      assert.matches("M_MMAP_THRESHOLD", f.message, 1, true)
      assert.matches("M_ARENA_MAX", f.message, 1, true)
   end)
end)

describe("assert.stable", function()
   it("fails a growing cache with the site's line and slope, passes a loop that frees", function()
      local _, _, out, err = h.ljleak_busted({"-o", "TAP", "t/growth/assert_spec.lua"})
      assert.matches("ok 1 %- assert.stable fails on a growing cache", out)
      assert.matches("ok 2 %- assert.stable passes on a loop that frees", out)
      local msg = assert(err:match("MESSAGE<<(.-)>>"))
      assert.matches("Expected a stable live set, but:", msg, 1, true)
      assert.matches("growth: 96.0 bytes in 1.00 blocks per iteration (fit 1.00)", msg, 1, true)
      assert.matches("in Lua t/growth/assert_spec.lua:11", msg, 1, true)
   end)
end)
