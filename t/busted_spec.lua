-- `ljleak busted` and the busted integration: which test leaked (exact bytes, name, line), and
-- that test, only that one, fails in busted's own output.
local cjson = require "cjson"
local h = require "t.helper"

local ljleak_busted = h.ljleak_busted

-- Definite records by test: {["test name"] = {bytes = N, line = L}}.
local function by_test(r)
   local t = {}
   for _, rec in ipairs(h.records(r, "definite")) do
      local name = rec.test ~= cjson.null and rec.test or "none"
      assert.is_nil(t[name], "one record per test: " .. name)
      t[name] = {bytes = rec.bytes, blocks = rec.blocks, line = rec.lua[1] and rec.lua[1].line}
   end
   return t
end

describe("ljleak busted", function()
   local r, code, out
   setup(function() r, code, out = ljleak_busted({"-o", "TAP", "t/busted/leaky_spec.lua"}) end)

   it("attributes each leak to its test (describe chain > it) and Lua line", function()
      assert.are.same({
         ["parser > handles huge input"] = {bytes = 4096, blocks = 1, line = 16},
         ["parser > with a cache > hits"] = {bytes = 300, blocks = 1, line = 23},   -- its before_each
         ["parser > leaks and fails"] = {bytes = 77, blocks = 1, line = 33},
         ["t/busted/leaky_spec.lua"] = {bytes = 11, blocks = 1, line = 7},           -- file-level code
      }, by_test(r))
   end)

   it("fails the leaking tests in busted's output, and only them", function()
      assert.matches("\nok 1 - parser parses small input\n", "\n" .. out, 1, true)
      assert.matches("\nnot ok 2 - parser handles huge input\n", "\n" .. out, 1, true)
      assert.matches("t/busted/leaky_spec.lua:15: ljleak: the test leaked:\n# definite: 4096 bytes in 1 block",
         out, 1, true)
      assert.matches("not ok 3 - parser with a cache hits", out, 1, true)
      assert.matches("# definite: 300 bytes in 1 block", out, 1, true)
      assert.matches("ok 5 - # SKIP parser is not written yet", out, 1, true)
   end)

   it("keeps a failing test's own failure and adds its leak", function()
      local section = out:match("not ok 4 %- parser leaks and fails\n(.-)\nok 5")
      assert.matches("Expected objects to be equal.", section, 1, true)
      assert.matches("ljleak: the test leaked:\n# definite: 77 bytes in 1 block", section, 1, true)
   end)

   it("exits with --error-exitcode, consistent with busted's failures", function()
      assert.are.equal(42, code)
      assert.matches("LOST BY TEST:", select(4, ljleak_busted({"t/busted/leaky_spec.lua"})), 1, true)
   end)

   it("with --no-per-test, only the test that fails its assertion fails; leaks still reported", function()
      local r2, code2, out2 = ljleak_busted({"-o", "TAP", "t/busted/leaky_spec.lua"}, {"--no-per-test"})
      assert.are.equal(42, code2)
      assert.matches("ok 2 - parser handles huge input", out2, 1, true)
      assert.is_nil(out2:find("not ok 2", 1, true))
      assert.matches("not ok 4 - parser leaks and fails", out2, 1, true)
      assert.are.same(by_test(r), by_test(r2))
   end)

   it("works with insulate, expose, --shuffle and the json output handler", function()
      local r2, code2, out2 = ljleak_busted({"--shuffle", "-o", "json", "t/busted/blocks_spec.lua"})
      assert.are.equal(42, code2)
      local res = cjson.decode(out2)
      local failed = {}
      for _, f in ipairs(res.failures) do failed[f.name] = f.message:match("definite: (%d+) bytes") end
      assert.are.same({["an insulated block leaks inside insulate"] = "200",
                       ["an exposed block leaks inside expose"] = "400"}, failed)
      assert.are.equal(3, #res.successes)
      assert.are.same({
         ["an insulated block > leaks inside insulate"] = {bytes = 200, blocks = 1, line = 7},
         ["an exposed block > leaks inside expose"] = {bytes = 400, blocks = 1, line = 12},
      }, by_test(r2))
   end)

   it("works with the junit output handler", function()
      local _, _, out2 = ljleak_busted({"-o", "junit", "t/busted/blocks_spec.lua"})
      local n = select(2, out2:gsub("ljleak: the test leaked:", ""))
      assert.are.equal(2, n)
   end)

   it("gives no record but reachable for a clean suite that loads lfs and cjson", function()
      local r2, code2 = ljleak_busted({"t/busted/clean_spec.lua"})
      assert.are.equal(0, code2)
      for _, kind in ipairs {"definite", "indirect", "possible"} do
         assert.are.same({blocks = 0, bytes = 0}, r2.summary[kind], kind)
      end
   end)

   it("passes busted's own error and status through for a spec that does not load", function()
      local r2, code2, out2 = ljleak_busted({"t/busted/broken_spec.lua"})
      assert.are.equal(1, code2)
      assert.matches("')' expected", out2, 1, true)
      assert.are.same({blocks = 0, bytes = 0}, r2.summary.definite)
   end)

   it("says which package to install when busted is missing", function()
      local code2, _, err = h.run({h.BIN, "busted", "--", "x_spec.lua"},
         {env = {LJLEAK_BUSTED = "/nonexistent/busted"}})
      assert.are.equal(2, code2)
      assert.matches("apt-get install lua-busted", err, 1, true)
   end)
end)

describe("ljleak busted is invisible to what a suite does", function()
   it("fails no test for an ffi.gc object still alive after it, and checks after after_each", function()
      local r, code, out = ljleak_busted({"-o", "TAP", "t/busted/retained_spec.lua"})
      assert.matches("\nok 1 - retained fills a module-level cache\n", "\n" .. out, 1, true)
      assert.matches("\nok 2 - retained with a fixture uses it\n", "\n" .. out, 1, true)
      assert.matches("\nok 3 - retained with a block freed by after_each allocates it\n", "\n" .. out, 1, true)
      assert.are.same({blocks = 0, bytes = 0}, r.summary.definite)
      -- the one real bug: a finalizer that keeps its own cdata (never collected before lua_close)
      assert.matches("not ok 4 - retained registers a finalizer that holds its own cdata", out, 1, true)
      assert.matches("finalizer_self_reference: the ffi.gc finalizer registered at t/busted/retained_spec.lua:31 "
         .. "keeps its own cdata", out, 1, true)
      assert.are.equal(1, #r.errors)
      assert.are.equal("finalizer_self_reference", r.errors[1].kind)
      assert.are.equal(31, r.errors[1].lua[1].line)
      assert.are.equal(42, code)
   end)

   it("settles a test whose live memory is ffi.gc'd with C.free or held by C without collecting, "
      .. "and still fails a leak or a bad free next to it", function()
      local r, code, out = ljleak_busted({"-o", "TAP", "t/busted/quick_checks_spec.lua"})
      assert.are.equal(42, code)
      assert.matches("\nok 1 - quick checks leave a test's ffi.gc'd garbage to the collector\n", "\n" .. out, 1, true)
      assert.matches("\nok 2 - quick checks (the garbage was not collected by the check)\n", out, 1, true)
      assert.matches("\nnot ok 3 - quick checks see a leak next to ffi.gc'd garbage\n", out, 1, true)
      assert.matches("# definite: 55 bytes in 1 block", out, 1, true)
      assert.matches("\nok 4 - quick checks pass a block that C holds\n", out, 1, true)
      assert.matches("\nnot ok 5 - quick checks see a C.free finalizer given memory malloc never handed out\n",
                     out, 1, true)
      assert.matches("# bad_free: the ffi.gc finalizer registered at t/busted/quick_checks_spec.lua:37 freed", out,
                     1, true)
      assert.are.same({["quick checks > see a leak next to ffi.gc'd garbage"] = {bytes = 55, blocks = 1, line = 25}},
                      by_test(r))
      assert.are.same({1, 66}, {h.total(r, "reachable", "hold_in_global")})
   end)

   it("runs every finalizer of 20,000 dropped ffi.gc buffers, memory flat", function()
      local r, code, out = ljleak_busted({"-o", "TAP", "t/busted/gc_many_spec.lua"})
      assert.matches("\nok 1 - many ffi.gc buffers are all finalized\n", "\n" .. out, 1, true)
      assert.are.equal(0, code)
      assert.are.same({blocks = 0, bytes = 0}, r.summary.definite)
   end)

   it("loads nothing through a spec's mocked require, and still names the leak", function()
      local r, code, out = ljleak_busted({"-o", "TAP", "t/busted/mock_require_spec.lua"})
      assert.matches("\nok 1 - a spec that mocks require gets its fake module\n", "\n" .. out, 1, true)
      assert.matches("\nok 2 - a spec that mocks require runs again with the mock in place\n", "\n" .. out, 1, true)
      assert.matches("not ok 3 - a spec that mocks require leaks a copy", out, 1, true)
      assert.matches("# definite: 26 bytes in 1 block", out, 1, true)
      assert.are.equal(42, code)
      local rec = h.one(r, "definite", "strdup")
      assert.are.equal(26, rec.bytes)
      assert.are.equal("a spec that mocks require > leaks a copy", rec.test)
      assert.are.equal(25, rec.lua[1].line)
   end)
end)

describe("the busted helper without ljleak run", function()
   local function preloaded(args, cwd)
      local dir = h.tmpdir()
      local argv = {"luajit", "/usr/bin/busted"}
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      local code, out = h.run(argv, {cwd = cwd, env = {
         LD_PRELOAD = h.ROOT .. "/build/ljleak/libljleak.so", LJLEAK_DIR = dir,
         LUA_PATH = h.ROOT .. "/lua/?.lua;" .. h.ROOT .. "/lua/?/init.lua;;",
         LUA_INIT = false,  -- the helper alone, even when this suite runs under ljleak
      }})
      h.rmtree(dir)
      return code, out
   end

   it("works as busted --helper=ljleak.busted", function()
      local code, out = preloaded({"--helper=ljleak.busted", "-o", "TAP", "t/busted/leaky_spec.lua"})
      assert.are.equal(1, code)
      assert.matches("not ok 2 - parser handles huge input", out, 1, true)
      assert.matches("# definite: 4096 bytes in 1 block, pid %d+, in test parser > handles huge input", out)
   end)

   it("works from a project's .busted file", function()
      local code, out = preloaded({"-o", "TAP", "leak_spec.lua"}, h.ROOT .. "/t/busted/config")
      assert.are.equal(1, code)
      assert.matches("not ok 1 - configured leaks", out, 1, true)
      assert.matches("# definite: 64 bytes in 1 block", out, 1, true)
   end)
end)
