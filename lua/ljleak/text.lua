-- The text report: leak records grouped by stack, biggest first, then the errors, what each
-- test lost, the problems, the totals and the suppressions used (stderr, `ljleak report`, and the
-- message of a failing check in the program).
local model = require "ljleak.model"
local symbolize = require "ljleak.symbolize"

local M = {}

local null, KINDS, kind_rank = model.null, model.KINDS, model.kind_rank
local sub, pair, sort_by = model.sub, model.pair, model.sort_by
local is_suppressed = model.is_suppressed
local EMPTY = require("ljleak.json").array()

-- "file.lua:12 (name)", and what an approximate location means; "[t/foo.t:57]": the line of the
-- test file it came from (test-nginx: a handler's line in its Test::Nginx block).
function M.lua_frame_text(f)
   local where = f.line and ("%s:%d"):format(f.source or "?", f.line) or (f.source or "?")
   if f.test_file and f.test_file ~= null and f.test_line and f.test_line ~= null then
      where = ("%s [%s:%d]"):format(where, f.test_file, f.test_line)
   end
   local what = f["function"] and f["function"] ~= null and f["function"] or nil
   if f.approximate and f.approximate ~= null then
      return ("%s (%sstart of the JIT trace that ran: the exact line is not known)"):format(
         where, what and (what .. ", ") or "")
   end
   return what and ("%s (%s)"):format(where, what) or where
end

local function plural(n, word)
   return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

local function amount(t)
   return ("%s in %s"):format(plural(t.bytes, "byte"), plural(t.blocks, "block"))
end

local function pids_text(pids)
   if #pids == 1 then return "pid " .. pids[1] end
   if #pids <= 4 then return "pids " .. table.concat(pids, ", ") end
   return ("in %d processes"):format(#pids)
end

-- Unsuppressed records grouped by kind and stack, biggest first.
local function groups(report, show_reachable)
   local numbering = model.numbering(report)
   local frame_lists, lua_lists = numbering.frames, numbering.lua
   local list, by_key = {}, {}
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) and (show_reachable or leak.kind ~= "reachable") then
         local test = leak.test ~= null and leak.test or nil
         local note = leak.note ~= null and leak.note or nil
         local frames, lua = leak.frames or EMPTY, leak.lua or EMPTY
         local fid, lid = frame_lists:id(frames), lua_lists:id(lua)
         local slot = sub(sub(sub(by_key, leak.kind), test or false), note or false)
         local g = slot[pair(fid, lid)]
         if not g then
            g = {kind = leak.kind, blocks = 0, bytes = 0, pids = {}, seen = {}, frames = frames, lua = lua,
                 test = test, note = note, fid = fid, lid = lid}
            slot[pair(fid, lid)] = g
            list[#list + 1] = g
         end
         g.blocks = g.blocks + leak.blocks
         g.bytes = g.bytes + leak.bytes
         if leak.pid and not g.seen[leak.pid] then
            g.seen[leak.pid] = true
            g.pids[#g.pids + 1] = leak.pid
         end
      end
   end
   local frame_rank, lua_rank = frame_lists:ranks(), lua_lists:ranks()
   return sort_by(list, {
      function(g) return -g.bytes end,
      function(g) return -g.blocks end,
      function(g) return kind_rank[g.kind] or 9 end,
      function(g) return frame_rank[g.fid] end,
      function(g) return lua_rank[g.lid] end,
      function(g) return g.test or "" end,
      function(g) return g.note or "" end,
   })
end

-- Add FRAMES to the text with LINE, each indented by INDENT ("at" the first, "by" the others).
local function frame_lines(line, frames, indent)
   local i = 1
   while frames[i] do
      -- A run of unnamed frames in one object (LuaJIT's VM) is shown as its first frame.
      local j = i
      while frames[i]["function"] == nil and frames[i].object and frames[j + 1]
            and frames[j + 1]["function"] == nil and frames[j + 1].object == frames[i].object do
         j = j + 1
      end
      local more = j > i and (" (and %d more frames there)"):format(j - i) or ""
      line(("%s%s %s%s"):format(indent, i == 1 and "at" or "by", symbolize.frame_text(frames[i]), more))
      i = j + 1
   end
end

-- The suppressions used, as LeakSanitizer's "Suppressions used" table: how many records (errors:
-- occurrences) and bytes each entry suppressed.
local function suppressions_table(line, used)
   if not used or #used == 0 then return end
   line("SUPPRESSIONS USED:")
   line(("  %7s %10s  %s"):format("count", "bytes", "name"))
   for _, u in ipairs(used) do
      local count = (u.count or 0) > 0 and u.count or u.records or 0
      local bytes = (u.blocks or 0) > 0 and tostring(u.bytes) or "-"
      local where = u.file and u.line and ("%s:%d"):format(u.file, u.line) or u.file
      line(("  %7d %10s  %s%s"):format(count, bytes, u.name, where and " (" .. where .. ")" or ""))
   end
end

-- The text report lists this many records of each kind, the biggest; the rest are counted.
M.TEXT_LIMIT = 50

-- The text summary. OPTS: show_reachable; brief (the records only); limit (records listed per
-- kind, default M.TEXT_LIMIT); full (where the records left out are: default "--json").
local function text_summary(report, opts)
   opts = opts or {}
   local limit = opts.limit or M.TEXT_LIMIT
   local out = {}
   local function line(s) out[#out + 1] = s end
   local listed, more = {}, {}
   for _, g in ipairs(groups(report, opts.show_reachable)) do
      listed[g.kind] = (listed[g.kind] or 0) + 1
      if listed[g.kind] > limit then
         local m = more[g.kind] or {records = 0, blocks = 0, bytes = 0}
         more[g.kind] = m
         m.records, m.blocks, m.bytes = m.records + 1, m.blocks + g.blocks, m.bytes + g.bytes
      else
         table.sort(g.pids)
         line(("%s: %s, %s%s"):format(g.kind, amount(g), pids_text(g.pids),
                                     g.test and (", in test " .. g.test) or ""))
         if g.note then line("    note: " .. g.note) end
         for _, lf in ipairs(g.lua) do
            line("    in Lua " .. M.lua_frame_text(lf))
         end
         frame_lines(line, g.frames, "    ")
         line("")
      end
   end
   for _, k in ipairs(KINDS) do
      local m = more[k]
      if m then
         line(("... and %d more %s records (%s); see %s"):format(m.records, k, amount(m), opts.full or "--json"))
         line("")
      end
   end
   for _, e in ipairs(report.errors or {}) do
      if e.suppressed_by == nil or e.suppressed_by == null then
         local times = (e.count or 1) > 1 and (" (%d times)"):format(e.count) or ""
         line(("error: %s, pid %s%s"):format(e.kind, tostring(e.pid), times))
         line("    " .. e.message)
         for _, lf in ipairs(e.lua or {}) do line("    in Lua " .. M.lua_frame_text(lf)) end
         frame_lines(line, e.frames or {}, "    ")
         for _, aux in ipairs(e.aux or {}) do   -- Valgrind's: where the block was freed, allocated...
            if aux.what then line("    " .. aux.what) end
            frame_lines(line, aux.frames or {}, "      ")
         end
         line("")
      end
   end
   if opts.brief then  -- the records only (a test's failure message)
      return table.concat(out, "\n") .. "\n"
   end
   -- Leaks by test (or tag): what each test lost, biggest first.
   local by_test, tests = {}, {}
   for _, leak in ipairs(report.leaks or {}) do
      local test = leak.test ~= null and leak.test or nil
      if test and leak.kind ~= "reachable" and not is_suppressed(leak) then
         local t = by_test[test]
         if not t then
            t = {name = test, blocks = 0, bytes = 0}
            by_test[test] = t
            tests[#tests + 1] = t
         end
         t.blocks, t.bytes = t.blocks + leak.blocks, t.bytes + leak.bytes
      end
   end
   if #tests > 0 then
      table.sort(tests, function(a, b)
         if a.bytes ~= b.bytes then return a.bytes > b.bytes end
         return a.name < b.name
      end)
      line("LOST BY TEST:")
      local rest = {blocks = 0, bytes = 0}
      for i, t in ipairs(tests) do
         if i <= limit then
            line(("  %s: %s"):format(t.name, amount(t)))
         else
            rest.blocks, rest.bytes = rest.blocks + t.blocks, rest.bytes + t.bytes
         end
      end
      if #tests > limit then line(("  ... and %d more tests (%s)"):format(#tests - limit, amount(rest))) end
      line("")
   end
   if report.problems and #report.problems > 0 then
      line("PROBLEMS:")
      for _, p in ipairs(report.problems) do
         local pid = p.pid ~= nil and p.pid ~= null and ("pid " .. p.pid) or nil
         local file = p.file ~= nil and p.file ~= null and p.file or nil
         local who = file and (pid and ("%s (%s)"):format(file, pid) or file) or pid
         line("  " .. (who and who .. ": " or "") .. p.message)
      end
      line("")
   end
   M.growth_section(report, line)
   local summary = report.summary or model.summarize(report.leaks or {})
   line("LEAK SUMMARY:")
   local names = {}
   for _, k in ipairs(KINDS) do names[#names + 1] = k end
   names[#names + 1] = "suppressed"
   for _, k in ipairs(names) do
      line(("  %10s: %s"):format(k, amount(summary[k] or {blocks = 0, bytes = 0})))
   end
   local reachable = summary.reachable or {blocks = 0}
   if not opts.show_reachable and reachable.blocks > 0 then
      line("Reachable blocks are not listed; rerun with --show-reachable to see where they were allocated.")
   end
   suppressions_table(line, report.suppressions)
   local b = report.baseline
   if b then
      line(("BASELINE: %d new, %d fixed, %d known (%s%s)"):format(b.new, b.fixed, b.known, b.file,
         b.updated and ", rewritten" or ""))
   end
   return table.concat(out, "\n") .. "\n"
end

M.plural = plural
M.frame_lines = frame_lines

-- The text of REPORT (OPTS as above).
M.render = text_summary

-- One record as readable text (its kind, size, test, Lua and C frames).
function M.record_text(leak)
   return text_summary({leaks = {leak}}, {brief = true, show_reachable = true})
end

-- -- Growth ------------------------------------------------------------------------------------------

-- `ljleak soak`'s part of the text report: the growing sites, what the allocator kept, a count.
function M.growth_section(report, line)
   local soak = report.soak
   if not soak or soak == null then return end
   for _, g in ipairs(report.growth or {}) do
      line((M.growth_text(g):gsub("\n$", "")))
      line("")
   end
   for _, p in ipairs(soak.processes or {}) do
      if p.allocator and p.allocator ~= null then line(("pid %s: %s"):format(tostring(p.pid), p.allocator.message)) end
   end
   line(("GROWTH: %s growing over %d iterations of %s (%d left out as warmup)")
      :format(plural(#(report.growth or {}), "site"), soak.iterations or 0, tostring(soak.target), soak.warmup or 0))
   line("")
end

-- A growing site (ljleak.stable's, or a growth record of `ljleak soak`): how fast it grows, how
-- well a line fits, what each iteration keeps, where it was allocated.
function M.growth_text(g)
   local out = {}
   local function line(s) out[#out + 1] = s end
   local fit = tonumber(g.fit) or 0
   line(("growth: %.1f bytes in %.2f blocks per iteration (fit %.2f), %s live now%s%s")
      :format(g.bytes_per_iteration, g.blocks_per_iteration, fit, amount(g),
              g.pid and (", pid " .. tostring(g.pid)) or "",
              g.test and g.test ~= null and (", in test " .. g.test) or ""))
   local gen = g.generations
   if gen and gen ~= null then
      line(("    each iteration keeps %.2f blocks to the end%s"):format(gen.persistent,
         (gen.released or 0) > 0 and (", and %.2f more for a while"):format(gen.released) or ""))
   end
   for _, lf in ipairs(g.lua or {}) do line("    in Lua " .. M.lua_frame_text(lf)) end
   frame_lines(line, g.frames or {}, "    ")
   return table.concat(out, "\n") .. "\n"
end

return M
