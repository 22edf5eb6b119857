-- The tracker's own walk down the Lua frames (csrc/lk_luaread.c) against lua_getstack's
-- (LJLEAK_LUA_WALK=getstack) on the Lua leak fixtures and the API's Lua-lines program, with the
-- JIT on and off: the same records with the same Lua frames (source, line, function name). And
-- t/leak/lua_call_kinds.lua's frames, every one, as they must be.
local h = require "t.helper"

local FIXTURES = {"aligned", "big_block", "calloc", "cdata_closed", "cdata_os_exit", "chain", "cycle", "ffi_gc",
                  "ffi_load", "fork_child", "inlined", "interior", "jit_loop", "lua_call_kinds", "malloc_dropped",
                  "order", "realloc_grown", "stale_cdata_os_exit", "strdup", "thread", "threads_stress"}

-- A record's Lua frames: source, line, function name (and ~ for a trace's start).
local function lua_frames(rec)
   local words = {}
   for _, l in ipairs(rec.lua or {}) do
      words[#words + 1] = ("%s:%s:%s%s"):format(tostring(l.source), tostring(l.line), tostring(l["function"]),
                                              l.approximate and "~" or "")
   end
   return words
end

describe("the tracker's walk down the Lua frames", function()
   it("gives every Lua fixture the Lua frames lua_getstack gives, the JIT on and off", function()
      local cmds = {}
      for _, f in ipairs(FIXTURES) do
         cmds[#cmds + 1] = {f, {"luajit", "t/leak/" .. f .. ".lua"}}
         cmds[#cmds + 1] = {f .. " -joff", {"luajit", "-joff", "t/leak/" .. f .. ".lua"}}
      end
      cmds[#cmds + 1] = {"api lines", {"luajit", "t/api/lines.lua"}}
      local compared = 0
      for _, line in ipairs(h.same_records(cmds, {LJLEAK_LUA_WALK = "getstack"}, "getstack", lua_frames)) do
         if line:find("|.+:%d+:") then compared = compared + 1 end
      end
      assert.is_true(compared > 40, compared .. " records with Lua frames")   -- there were frames to compare
   end)

   it("names every frame of every kind of call", function()
      local F = "t/leak/lua_call_kinds.lua"
      local want = {
         ["11"] = {{12, "leaf"}, {14, "meth"}, {15, "alias1"}, {18, "main chunk"}},
         ["12"] = {{12, "leaf"}, {14, "meth"}, {15, "alias2"}, {18, "main chunk"}},
         ["13"] = {{12, "leaf"}, {14, "meth"}, {15}, {[2] = "pcall", [3] = "[C]"}, {19, "main chunk"}},
         ["6"] = {{12, "leaf"}, {17, "__index"}, {20, "main chunk"}},
         ["14"] = {{12, "leaf"}, {21}},
         ["53"] = {{12, "leaf"}, {22}, {22, "main chunk"}},
      }
      for _, joff in ipairs({false, true}) do
         local r, code = h.ljleak_run({"luajit", joff and "-joff" or "-jon", F})
         assert.are.equal(42, code)
         local seen = 0
         for _, rec in ipairs(h.records(r, "definite")) do
            local got = {}
            for _, l in ipairs(rec.lua) do
               got[#got + 1] = {l.line, l["function"], l.source ~= F and l.source or nil}
            end
            assert.are.same(want[tostring(rec.bytes)], got, rec.bytes .. " bytes")
            seen = seen + 1
         end
         assert.are.equal(6, seen)
      end
   end)
end)
