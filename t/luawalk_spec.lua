-- The tracker's own walk down the Lua frames (csrc/lk_luaread.c) against lua_getstack's
-- (LJLEAK_LUA_WALK=getstack) on the Lua leak fixtures and the API's Lua-lines program, with the
-- JIT on and off: the same records with the same Lua frames (source, line, function name). And
-- t/leak/lua_call_kinds.lua's frames, every one, as they must be.
local h = require "t.helper"

local FIXTURES = {"aligned", "big_block", "calloc", "cdata_closed", "cdata_os_exit", "chain", "cycle", "ffi_gc",
                  "ffi_load", "fork_child", "inlined", "interior", "jit_loop", "lua_call_kinds", "malloc_dropped",
                  "order", "realloc_grown", "stale_cdata_os_exit", "strdup", "thread", "threads_stress"}

-- Leak records as sorted lines: kind, blocks, bytes, then each Lua frame.
local function records(report)
   local lines = {}
   for _, rec in ipairs(report.leaks) do
      if rec.kind ~= "reachable" then
         local parts = {("%s %d %d |"):format(rec.kind, rec.blocks, rec.bytes)}
         for _, l in ipairs(rec.lua or {}) do
            parts[#parts + 1] = ("%s:%s:%s%s"):format(tostring(l.source), tostring(l.line), tostring(l["function"]),
                                                    l.approximate and "~" or "")
         end
         lines[#lines + 1] = table.concat(parts, " ")
      end
   end
   table.sort(lines)
   return lines
end

describe("the tracker's walk down the Lua frames", function()
   it("gives every Lua fixture the Lua frames lua_getstack gives, the JIT on and off", function()
      local jobs = {}
      local function add(name, cmd)
         jobs[name .. " own"] = h.job({"--", unpack(cmd)})
         jobs[name .. " getstack"] = h.job({"--", unpack(cmd)}, {LJLEAK_LUA_WALK = "getstack"})
      end
      for _, f in ipairs(FIXTURES) do
         add(f, {"luajit", "t/leak/" .. f .. ".lua"})
         add(f .. " -joff", {"luajit", "-joff", "t/leak/" .. f .. ".lua"})
      end
      add("api lines", {"luajit", "t/api/lines.lua"})
      h.run_all(jobs)
      local compared = 0
      for name, job in pairs(jobs) do
         local base = name:match("^(.*) own$")
         if base then
            local other = jobs[base .. " getstack"]
            assert.is_truthy(job.report, name .. ": " .. tostring(job.stderr))
            assert.is_truthy(other.report, base .. " getstack: " .. tostring(other.stderr))
            local mine, theirs = records(job.report), records(other.report)
            assert.are.same(theirs, mine, base)
            for _, line in ipairs(mine) do
               if line:find("|.+:%d+:") then compared = compared + 1 end
            end
         end
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
