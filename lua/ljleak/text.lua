-- The text report: leak records grouped by stack and numbered (definite ones first, each followed
-- by the indirect ones it holds, then possible, then reachable; biggest first), their stacks
-- folded below LuaJIT's VM, then the errors, what each test lost, the problems, the heap, the
-- totals and the suppressions used (stderr, `ljleak report`, and the message of a failing check).
local model = require "ljleak.model"
local symbolize = require "ljleak.symbolize"
local util = require "ljleak.util"

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

local plural = util.plural

local function amount(t)
   return ("%s in %s"):format(plural(t.bytes, "byte"), plural(t.blocks, "block"))
end

local function pids_text(pids)
   if #pids == 1 then return "pid " .. pids[1] end
   if #pids <= 4 then return "pids " .. table.concat(pids, ", ") end
   return ("in %d processes"):format(#pids)
end

-- The kinds a text report lists: definite, indirect and possible always; reachable with
-- show_reachable, or when it is a --fail-on kind (OPTS.fail_on: a set), so that what fails a run
-- is always shown.
local function listed_kinds(opts)
   local fail_on = opts.fail_on or {}
   return {definite = true, indirect = true, possible = true, live = true,
           reachable = opts.show_reachable or fail_on.reachable or false}
end

-- Unsuppressed records of the LISTED kinds grouped by kind and stack (across processes), in the
-- report's order: definite groups first, each followed by the indirect groups it holds (`owner`:
-- the group of the definite records that hold their blocks), then the rest of each kind; biggest
-- first within a kind. A definite group has `holds`, the blocks and bytes of those indirect groups.
local function groups(report, listed)
   local numbering = model.numbering(report)
   local frame_lists, lua_lists = numbering.frames, numbering.lua
   local list, by_key, group_of = {}, {}, {}
   local leaks, by_id = report.leaks or EMPTY, {}
   for _, leak in ipairs(leaks) do
      if leak.id and leak.id ~= null then by_id[leak.id] = leak end
   end
   -- Records other than indirect first: the groups that hold indirect ones exist by then.
   for pass = 1, 2 do
      for _, leak in ipairs(leaks) do
         if (leak.kind == "indirect") == (pass == 2) and listed[leak.kind] and not is_suppressed(leak) then
            local test = leak.test ~= null and leak.test or nil
            local note = leak.note ~= null and leak.note or nil
            local held_by = leak.owner and leak.owner ~= null and by_id[leak.owner]
            local owner = held_by and held_by.kind == "definite" and held_by.pid == leak.pid and group_of[held_by]
            local frames, lua = leak.frames or EMPTY, leak.lua or EMPTY
            local fid, lid = frame_lists:id(frames), lua_lists:id(lua)
            local slot = sub(sub(sub(sub(by_key, leak.kind), test or false), note or false), owner or false)
            local g = slot[pair(fid, lid)]
            if not g then
               g = {kind = leak.kind, blocks = 0, bytes = 0, pids = {}, seen = {}, frames = frames, lua = lua,
                    test = test, note = note, fid = fid, lid = lid, owner = owner or nil}
               slot[pair(fid, lid)] = g
               list[#list + 1] = g
            end
            group_of[leak] = g
            g.blocks = g.blocks + leak.blocks
            g.bytes = g.bytes + leak.bytes
            if leak.pid and not g.seen[leak.pid] then
               g.seen[leak.pid] = true
               g.pids[#g.pids + 1] = leak.pid
            end
         end
      end
   end
   for _, g in ipairs(list) do
      local o = g.owner
      if o then
         o.holds = o.holds or {blocks = 0, bytes = 0}
         o.holds.blocks, o.holds.bytes = o.holds.blocks + g.blocks, o.holds.bytes + g.bytes
      end
   end
   local frame_rank, lua_rank = frame_lists:ranks(), lua_lists:ranks()
   list = sort_by(list, {
      function(g) return kind_rank[g.kind] or 9 end,
      function(g) return -g.bytes end,
      function(g) return -g.blocks end,
      function(g) return frame_rank[g.fid] end,
      function(g) return lua_rank[g.lid] end,
      function(g) return g.test or "" end,
      function(g) return g.note or "" end,
   })
   return model.after_owners(list, function(g) return g.owner end)
end

-- -- Stacks ----------------------------------------------------------------------------------

-- Add FRAMES[FIRST..LAST] to the text with LINE, each indented by INDENT ("at" the first of the
-- stack, "by" the others). A run of unnamed frames in one object (LuaJIT's VM) is shown as its
-- first frame; an inlined function says so.
local function frame_range(line, frames, first, last, indent)
   local i = first
   while i <= last do
      local j = i
      while frames[i]["function"] == nil and frames[i].object and j < last
            and frames[j + 1]["function"] == nil and frames[j + 1].object == frames[i].object do
         j = j + 1
      end
      local more = j > i and (" (and %d more frames there)"):format(j - i) or ""
      local inlined = frames[i].inlined and frames[i].inlined ~= null and ", inlined" or ""
      line(("%s%s %s%s%s"):format(indent, i == 1 and "at" or "by", symbolize.frame_text(frames[i]), inlined, more))
      i = j + 1
   end
end

-- Add FRAMES to the text with LINE, each indented by INDENT.
local function frame_lines(line, frames, indent)
   frame_range(line, frames, 1, #frames, indent)
end

-- A record's stack (C FRAMES and LUA frames): with Lua frames and a frame in LuaJIT's VM, the C
-- frames above the VM (what Lua called, down to the allocation), then the Lua frames, then one
-- line for the frames folded (the VM, the C code that runs it, main; the JSON keeps them);
-- otherwise the Lua frames, then every C frame.
local function stack_lines(line, frames, lua, indent)
   local vm = #lua > 0 and model.first_vm_frame(frames)
   if vm then
      frame_range(line, frames, 1, vm - 1, indent)
      for _, lf in ipairs(lua) do line(indent .. "in Lua " .. M.lua_frame_text(lf)) end
      local n = #frames - vm + 1
      line(("%s(%s folded: LuaJIT's VM%s; the JSON report has them)"):format(indent,
         n == 1 and "1 frame" or n .. " frames", frames[#frames]["function"] == "main" and " down to main" or ""))
   else
      for _, lf in ipairs(lua) do line(indent .. "in Lua " .. M.lua_frame_text(lf)) end
      frame_lines(line, frames, indent)
   end
end

-- -- Stacks as names (flame graphs, folded stacks) ------------------------------------------

local frame_name_of = setmetatable({}, {__mode = "k"})

-- A C frame's short name: its text without the object ("make_thing (thing.c:12)").
function M.frame_name(f)
   local name = frame_name_of[f]
   if not name then
      name = model.frame_text(f):gsub(" %[[^%]]*%]$", ""):gsub("%s+$", "")
      frame_name_of[f] = name
   end
   return name
end

-- A Lua frame's short name, as C frames read: "function (source:line)".
function M.lua_frame_name(f)
   local where = f.line and f.line ~= null and ("%s:%s"):format(f.source or "?", f.line) or (f.source or "?")
   local fn = f["function"] ~= null and f["function"] or nil
   return ((fn and ("%s (%s)"):format(fn, where) or where):gsub("%s+$", ""))
end

-- The names of a stack (C FRAMES, LUA frames), innermost first: with Lua frames and a frame in
-- LuaJIT's VM, the C frames from the allocation function down to the VM, then the Lua frames (the
-- VM and what runs it left out, as the text report folds them); else every C frame, then the Lua
-- frames.
function M.stack_names(frames, lua)
   local names, vm = {}, #lua > 0 and model.first_vm_frame(frames)
   for i = 1, (vm or #frames + 1) - 1 do names[#names + 1] = M.frame_name(frames[i]) end
   for i = 1, #lua do names[#names + 1] = M.lua_frame_name(lua[i]) end
   return names
end

-- -- Summaries -------------------------------------------------------------------------------

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

-- A command line (a list of arguments) as one line: arguments with blanks or quotes in single
-- quotes, as a shell would take them; at most LIMIT characters.
function M.command_text(argv, limit)
   local words = {}
   for i, a in ipairs(argv or {}) do
      words[i] = (a == "" or a:find("[^%w%-_./=:,+@%%]")) and "'" .. a:gsub("'", "'\\''") .. "'" or a
   end
   local s = table.concat(words, " "):gsub("[%c]", "?")
   limit = limit or 160
   return #s > limit and s:sub(1, limit - 3) .. "..." or s
end

local function heap_text(h)
   return ("%s in use at exit; %s, %s, %s allocated"):format(amount(h.in_use), plural(h.allocs, "alloc"),
      plural(h.frees, "free"), plural(h.allocated, "byte"))
end

-- Valgrind's HEAP SUMMARY, and each checked process with its command line (at most LIMIT).
local function heap_summary(line, report, limit)
   local procs = {}
   for _, p in ipairs(report.processes or {}) do
      if p.checked ~= false and p.pid then procs[#procs + 1] = p end
   end
   local total = report.heap ~= null and report.heap or model.heap_totals(procs)
   if not total and #procs == 0 then return end
   line("HEAP SUMMARY:")
   if total then
      line(("    in use at exit: %s"):format(amount(total.in_use)))
      line(("  total heap usage: %s, %s, %s allocated"):format(plural(total.allocs, "alloc"),
         plural(total.frees, "free"), plural(total.allocated, "byte")))
   end
   for i, p in ipairs(procs) do
      if i > limit then
         line(("  ... and %d more processes (see the JSON report's processes)"):format(#procs - limit))
         break
      end
      local cmd = p.command and p.command ~= null and #p.command > 0 and M.command_text(p.command) or p.exe or "?"
      local heap = #procs > 1 and p.heap and p.heap ~= null and ": " .. heap_text(p.heap) or ""
      line(("  pid %d: %s%s"):format(p.pid, cmd, heap))
   end
   line("")
end

-- What each test (or tag) lost, biggest first: {name, blocks, bytes} of its unsuppressed records
-- other than reachable.
function M.lost_by_test(report)
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
   table.sort(tests, function(a, b)
      if a.bytes ~= b.bytes then return a.bytes > b.bytes end
      return a.name < b.name
   end)
   return tests
end

-- -- The report ------------------------------------------------------------------------------

-- The text report lists this many records of each kind, the biggest; the rest are counted.
M.TEXT_LIMIT = 50

-- The text summary. OPTS: show_reachable; fail_on (the --fail-on kinds, a set: they are listed
-- whatever show_reachable says); brief (the records only); unnumbered (no "loss record N of M");
-- limit (records listed per kind, default M.TEXT_LIMIT); full (where the records left out are:
-- default "--json").
local function text_summary(report, opts)
   opts = opts or {}
   local limit = opts.limit or M.TEXT_LIMIT
   local out = {}
   local function line(s) out[#out + 1] = s end
   local listed, more, shown = {}, {}, {}
   local list = groups(report, listed_kinds(opts))
   for number, g in ipairs(list) do
      listed[g.kind] = (listed[g.kind] or 0) + 1
      if listed[g.kind] > limit or (g.owner and not shown[g.owner]) then
         local m = more[g.kind] or {records = 0, blocks = 0, bytes = 0}
         more[g.kind] = m
         m.records, m.blocks, m.bytes = m.records + 1, m.blocks + g.blocks, m.bytes + g.bytes
      else
         shown[g] = number
         table.sort(g.pids)
         local holds = g.holds and (" (+%s indirect, below)"):format(amount(g.holds)) or ""
         local held = g.owner and (", held by loss record %d"):format(shown[g.owner]) or ""
         local numbered = opts.unnumbered and "" or (" (loss record %d of %d)"):format(number, #list)
         line(("%s: %s%s%s, %s%s%s"):format(g.kind, amount(g), holds, held, pids_text(g.pids),
                                          g.test and (", in test " .. g.test) or "", numbered))
         if g.note then line("    note: " .. g.note) end
         stack_lines(line, g.frames, g.lua, "    ")
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
      if not is_suppressed(e) then
         local times = (e.count or 1) > 1 and (" (%d times)"):format(e.count) or ""
         line(("error: %s, pid %s%s"):format(e.kind, tostring(e.pid), times))
         line("    " .. e.message)
         stack_lines(line, e.frames or EMPTY, e.lua or EMPTY, "    ")
         for _, aux in ipairs(e.aux or {}) do   -- Valgrind's: where the block was freed, allocated...
            if aux.what then line("    " .. aux.what) end
            stack_lines(line, aux.frames or EMPTY, aux.lua or EMPTY, "      ")
         end
         line("")
      end
   end
   if opts.brief then  -- the records only (a test's failure message)
      return table.concat(out, "\n") .. "\n"
   end
   local tests = M.lost_by_test(report)
   if #tests > 0 then
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
   heap_summary(line, report, 20)
   local summary = report.summary or model.summarize(report.leaks or {})
   line("LEAK SUMMARY:")
   local names = {}
   for _, k in ipairs(KINDS) do names[#names + 1] = k end
   names[#names + 1] = "suppressed"
   for _, k in ipairs(names) do
      line(("  %10s: %s"):format(k, amount(summary[k] or {blocks = 0, bytes = 0})))
   end
   local reachable = summary.reachable or {blocks = 0}
   if not listed_kinds(opts).reachable and reachable.blocks > 0 then
      line("Reachable blocks are not listed; rerun with --show-reachable to see where they were allocated.")
   end
   local errors = model.summarize({}, report.errors or EMPTY).error_totals
   line(("ERROR SUMMARY: %s%s"):format(plural(errors.count, "error"),
      errors.records > 0 and (" from %s"):format(plural(errors.records, "record")) or ""))
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
M.stack_lines = stack_lines
M.listed_kinds = listed_kinds
M.heap_text = heap_text

-- The text of REPORT (OPTS as above).
M.render = text_summary

-- One record as readable text (its kind, size, test, Lua and C frames).
function M.record_text(leak)
   return text_summary({leaks = {leak}}, {brief = true, show_reachable = true, unnumbered = true})
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
   stack_lines(line, g.frames or EMPTY, g.lua or EMPTY, "    ")
   return table.concat(out, "\n") .. "\n"
end

return M
