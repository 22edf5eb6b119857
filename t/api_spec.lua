-- The Lua API (`require "ljleak"`) end to end: Lua lines, checkpoints, tags, the ffi.gc
-- registry and assert.no_leaks, each with exact numbers and lines.
local cjson = require "cjson"
local h = require "t.helper"

local function api(name, extra, cmd_prefix)
   local cmd = {"luajit"}
   for _, a in ipairs(cmd_prefix or {}) do cmd[#cmd + 1] = a end
   cmd[#cmd + 1] = "t/api/" .. name .. ".lua"
   local r, code, err, out = h.ljleak_run(cmd, extra)
   local ok, printed = pcall(cjson.decode, out or "")
   return r, code, ok and printed or nil, err
end

local function first_lua(rec)
   return rec.lua[1] or {}
end

describe("Lua lines", function()
   for _, mode in ipairs {{}, {"-joff"}} do
      it("names the real line of each frame with the JIT " .. (mode[1] and "off" or "on"), function()
         local r = api("lines", nil, mode)
         local recs = h.records(r, "definite")
         assert.are.equal(1, #recs)
         assert.are.equal(111, recs[1].bytes)
         assert.are.same({
            {source = "t/api/lines.lua", line = 7, ["function"] = "inner"},
            {source = "t/api/lines.lua", line = 12, ["function"] = "outer"},
            {source = "t/api/lines.lua", line = 16, ["function"] = "main chunk"},
         }, recs[1].lua)
      end)
   end

   it("flags allocations from compiled code as the trace's start, never a wrong line", function()
      local r = h.fixture("jit_loop")
      local exact, approx = 0, 0
      for _, rec in ipairs(h.records(r, "definite")) do
         local f = first_lua(rec)
         assert.are.equal("t/leak/jit_loop.lua", f.source)
         if f.approximate then
            approx = approx + rec.blocks
            assert.are.equal(9, f.line)   -- the loop's first line, where its trace starts
         else
            exact = exact + rec.blocks
            assert.are.equal(10, f.line)  -- C.malloc(24)
         end
      end
      assert.are.equal(2000, exact + approx)
      assert.is_true(approx > 1000)     -- most iterations ran compiled
      assert.is_true(exact > 0)         -- the first ones were interpreted
   end)

   it("gives the line of a leak inside a C library called from Lua", function()
      local r = h.fixture("ffi_load")
      local rec = h.records(r, "definite", "leak_malloc")[1]
      assert.are.same({source = "t/leak/ffi_load.lua", line = 5, ["function"] = "main chunk"}, rec.lua[1])
   end)

   it("re-runs `luajit -lljleak script` under the tracker", function()
      local code, _, err = h.run({"luajit", "-lljleak", "t/api/lines.lua"},
         {env = {LUA_PATH = h.ROOT .. "/lua/?.lua;" .. h.ROOT .. "/lua/?/init.lua;;",
                 LD_PRELOAD = false, LJLEAK_DIR = false, LUA_INIT = false}})  -- even under ljleak itself
      assert.are.equal(42, code)
      assert.matches("definite: 111 bytes in 1 block", err, 1, true)
      assert.matches("in Lua t/api/lines.lua:7 (inner)", err, 1, true)
   end)
end)

describe("ljleak.check", function()
   it("does not count a pointer held by a live cdata, counts it once dropped", function()
      local _, _, out = api("check")
      assert.are.same({}, out.held)
      assert.are.same({{kind = "definite", blocks = 1, bytes = 48, line = 23, fn = "malloc"}}, out.dropped)
      assert.are.same({}, out.freed)
   end)
end)

describe("ljleak.check_since without ffi.C.free declared", function()
   it("calls blocks that C's own roots hold not lost without collecting, and still finds a lost one", function()
      local _, _, out = api("check_held_no_free")
      assert.is_table(out, "the program printed no JSON")
      assert.are.equal(0, out.held)
      assert.is_false(out.held_collected, "the check collected garbage: it took the slow path")
      assert.are.same({{kind = "definite", blocks = 1, bytes = 40, line = 24}}, out.lost)
   end)
end)

describe("ljleak.check in a big heap", function()
   it("finds blocks lost at addresses the heap gave long before, by the interpreter and compiled code",
      function()
      local r, code, out = api("check_old_pages")
      assert.are.equal(42, code)   -- the first check's lost blocks are lost at exit too
      assert.is_table(out, "the program printed no JSON")
      assert.is_true(out.reused >= 12, "the freed blocks' addresses were not handed out again")
      assert.are.same({{kind = "definite", blocks = 9, bytes = 1040, line = 24, ["function"] = "again",
                        approximate = false}}, out.interpreted)
      -- The second check's 5 blocks of 80 bytes: one record, or two when some of them were made
      -- before the loop was compiled. The interpreter's: line 24 in again, exact. Compiled code's:
      -- the start of the trace that ran, flagged approximate: the loop's line 37, or again's line
      -- 20 when again's calls got hot before the loop did (LuaJIT's hot counters are shared by a
      -- hash of the bytecode's address, so which one wins depends on where the code was loaded).
      local blocks, bytes = 0, 0
      for _, rec in ipairs(out.compiled) do
         assert.are.equal("definite", rec.kind)
         if rec.line == 24 then
            assert.are.same({"again", false}, {rec["function"], rec.approximate})
         else
            assert.is_true(rec.line == 37 or rec.line == 20, "line " .. tostring(rec.line))
            assert.is_true(rec.approximate, "line " .. rec.line .. " is not flagged approximate")
         end
         blocks, bytes = blocks + rec.blocks, bytes + rec.bytes
      end
      assert.is_true(#out.compiled == 1 or #out.compiled == 2, #out.compiled .. " records")
      assert.are.same({5, 400}, {blocks, bytes})
      -- at exit: the interpreted check's 9 blocks (the compiled one's were freed at the end)
      local lost = h.one(r, "definite", "malloc")
      assert.are.same({9, 1040, "again", 24},
                      {lost.blocks, lost.bytes, first_lua(lost)["function"], first_lua(lost).line})
   end)
end)

describe("the API in the program", function()
   it("loads none of the CLI's modules: no lfs, posix, XML or report-file code", function()
      local code, out, err = h.run({h.BIN, "run", "--", "luajit", "t/api/loaded.lua"})
      assert.are.equal(42, code, err)   -- the 8 bytes are lost
      assert.are.equal("loaded: \n", out)
   end)
end)

describe("ljleak.check inside an ffi.gc finalizer", function()
   it("takes none of its own frees for bad ones, and finds what the function lost", function()
      local r, code, out = api("check_in_finalizer")
      assert.are.same({check = {n = 1, bytes = 33, line = 12}, problems = {}}, out)
      assert.are.same({}, r.errors)
      assert.are.equal(42, code)   -- the 33 bytes are still lost at exit
      h.only_definite(r, 1, 33)
   end)
end)

describe("ljleak.check with another thread allocating all the time", function()
   it("stops it, scans it, lets it go on, and finds exactly what the checked function lost", function()
      local _, code, out, err = api("check_threads")
      local want = {}
      for i = 1, 5 do want[i] = {{kind = "definite", bytes = 1000 + i, line = 13}} end
      assert.are.same(want, out, err)
      assert.are.equal(42, code, err)
   end)
end)

describe("snapshots", function()
   it("list the blocks born between two snapshots and still live", function()
      local _, code, out = api("snapshot")
      assert.are.equal(0, code)
      assert.are.same({blocks = 10, bytes = 1000, groups = 1, line = 10, now_blocks = 11, now_bytes = 1005}, out)
   end)
end)

describe("tags", function()
   it("group leaks by the tag active at allocation", function()
      local r = api("tags")
      local by = {}
      for _, rec in ipairs(h.records(r, "definite")) do
         by[rec.test ~= cjson.null and rec.test or "none"] = rec.bytes
      end
      assert.are.same({parser = 10, lexer = 20, none = 30}, by)
   end)

   it("follow a tag change inside compiled code that allocates in the same place", function()
      local r = api("tags_jit")
      local by = {}
      for _, rec in ipairs(h.records(r, "definite")) do
         local tag = rec.test ~= cjson.null and rec.test or "none"
         by[tag] = (by[tag] or 0) + rec.bytes
      end
      assert.are.same({even = 4000, odd = 4000}, by)
   end)
end)

describe("the ffi.gc registry", function()
   local r, code, out
   setup(function() r, code, out = api("registry") end)

   it("reports each misuse where the finalizer was registered", function()
      local got = {}
      for _, p in ipairs(out.problems) do got[#got + 1] = p.kind .. "@" .. p.line end
      table.sort(got)
      assert.are.same({"bad_free@16", "bad_free@27", "double_finalizer@16", "finalizer_error@19"}, got)
      assert.is_true(out.gc_error)  -- the finalizer's error still reaches the program
   end)

   it("lists a resource its own finalizer keeps alive as retained (information, not an error)", function()
      assert.are.same({{kind = "retained", line = 23, ctype = "ctype<void *>"}}, out.retained)
   end)

   it("says in the exit report that a leaked block's finalizer was detached, and where", function()
      local recs = h.records(r, "definite")
      assert.are.equal(1, #recs)
      assert.are.equal(64, recs[1].bytes)
      assert.are.equal("ffi.gc finalizer detached at t/api/registry.lua:11 by ffi.gc(cd, nil)", recs[1].note)
      assert.are.same({source = "t/api/registry.lua", line = 10, ["function"] = "main chunk"}, recs[1].lua[1])
   end)

   it("puts the problems into the report's errors, which fail the run", function()
      assert.are.equal(42, code)
      local kinds = {}
      for _, e in ipairs(r.errors) do kinds[#kinds + 1] = e.kind end
      table.sort(kinds)
      assert.are.same({"bad_free", "bad_free", "double_finalizer", "finalizer_error", "finalizer_self_reference"},
         kinds)
      for _, e in ipairs(r.errors) do
         if e.kind == "finalizer_self_reference" then
            assert.are.equal(23, e.lua[1].line)  -- registered there; only lua_close freed it
            assert.matches("was only freed by lua_close", e.message, 1, true)
         end
      end
   end)
end)

describe("assert.no_leaks", function()
   it("fails only the leaky test, with the report and its line", function()
      local code, out = h.run({h.BIN, "run", "--", "luajit", "/usr/bin/busted", "-o", "TAP",
                               "t/api/no_leaks_spec.lua"})
      assert.are.equal(42, code)  -- the leaked block is still lost at exit
      assert.matches("ok 1 - no_leaks passes when fn frees what it allocates", out, 1, true)
      assert.matches("not ok 2 - no_leaks fails with the report when fn leaks", out, 1, true)
      assert.matches("definite: 10 bytes in 1 block", out, 1, true)
      assert.matches("in Lua t/api/no_leaks_spec.lua:11", out, 1, true)
   end)
end)
