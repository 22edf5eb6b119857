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

-- The report's leak records as sorted lines: kind, blocks, bytes, then each frame (function, or
-- object and offset) and Lua frame (source and line).
local function records(report)
   local lines = {}
   for _, rec in ipairs(report.leaks) do
      if rec.kind ~= "reachable" then
         local parts = {("%s %d %d |"):format(rec.kind, rec.blocks, rec.bytes)}
         for _, f in ipairs(rec.frames or {}) do
            parts[#parts + 1] = f["function"] or ("%s+%s"):format(tostring(f.object), tostring(f.offset))
         end
         for _, l in ipairs(rec.lua or {}) do
            parts[#parts + 1] = ("%s:%s"):format(tostring(l.source), tostring(l.line))
         end
         lines[#lines + 1] = table.concat(parts, " ")
      end
   end
   table.sort(lines)
   return lines
end

describe("the tracker's own unwinder", function()
   it("gives the leak fixtures and C programs the records and frames libunwind gives them", function()
      local jobs = {}
      local function add(name, cmd)
         jobs[name .. " own"] = h.job({"--", unpack(cmd)})
         jobs[name .. " libunwind"] = h.job({"--", unpack(cmd)}, {LJLEAK_UNWIND = "libunwind"})
      end
      for _, f in ipairs(FIXTURES) do add(f, {"luajit", "t/leak/" .. f .. ".lua"}) end
      for _, p in ipairs(PROGRAMS) do add(table.concat(p, " "), {h.ROOT .. "/build/t/prog/" .. p[1], p[2]}) end
      h.run_all(jobs)
      local compared = 0
      for name, job in pairs(jobs) do
         local base = name:match("^(.*) own$")
         if base then
            local other = jobs[base .. " libunwind"]
            assert.is_truthy(job.report, name .. ": " .. tostring(job.stderr))
            assert.is_truthy(other.report, base .. " libunwind: " .. tostring(other.stderr))
            local mine, theirs = records(job.report), records(other.report)
            assert.are.same(theirs, mine, base)
            compared = compared + #mine
         end
      end
      assert.is_true(compared > 50)   -- records were there to compare
   end)
end)
