-- The tracker's own unwinder (csrc/lk_unwind.c) against libunwind (LJLEAK_UNWIND=libunwind) on the
-- leak fixtures and C programs: the same records with the same frames, Lua frames included. Only
-- what leaked is compared (definite, indirect, possible): reachable blocks include the dynamic
-- linker's per-thread tables, whose size follows the number of libraries loaded (libunwind and
-- liblzma are two more).
local h = require "t.helper"

local FIXTURES = {"aligned", "big_block", "calloc", "cdata_closed", "cdata_os_exit", "chain", "cycle", "exit_paths",
                  "ffi_gc", "ffi_load", "fork_child", "inlined", "interior", "jit_loop", "lua_lines",
                  "malloc_dropped", "mangled", "many_sites", "order", "realloc_grown", "stale_cdata_os_exit",
                  "strdup", "thread", "threads_stress"}
local PROGRAMS = {{"forkthread"}, {"altstack", "signal"}, {"altstack", "realign"}, {"altstack", "here"}}

-- A record's frames (function, or object and offset) and Lua frames (source and line).
local function frames(rec)
   local words = {}
   for _, f in ipairs(rec.frames or {}) do
      words[#words + 1] = f["function"] or ("%s+%s"):format(tostring(f.object), tostring(f.offset))
   end
   for _, l in ipairs(rec.lua or {}) do
      words[#words + 1] = ("%s:%s"):format(tostring(l.source), tostring(l.line))
   end
   return words
end

describe("the tracker's own unwinder", function()
   it("gives the leak fixtures and C programs the records and frames libunwind gives them", function()
      local cmds = {}
      for _, f in ipairs(FIXTURES) do cmds[#cmds + 1] = {f, {"luajit", "t/leak/" .. f .. ".lua"}} end
      for _, p in ipairs(PROGRAMS) do
         cmds[#cmds + 1] = {table.concat(p, " "), {h.ROOT .. "/build/t/prog/" .. p[1], p[2]}}
      end
      local lines = h.same_records(cmds, {LJLEAK_UNWIND = "libunwind"}, "libunwind", frames)
      assert.is_true(#lines > 50)   -- records were there to compare
   end)
end)
