-- Leak records (JSON schema v1, shared/DESIGN.md): built from a run directory's raw reports,
-- counted, and written by a table of formatters keyed by name (text, json).
local bit = require "bit"
local cjson = require "cjson"
local table_new = require "table.new"

local lfs = require "lfs"

local json = require "ljleak.json"
local outfile = require "ljleak.outfile"
local raw = require "ljleak.raw"
local symbolize = require "ljleak.symbolize"
local util = require "ljleak.util"

local M = {}

M.SCHEMA = 1
M.KINDS = raw.KINDS
M.KINDS_SET = {}
for _, k in ipairs(M.KINDS) do M.KINDS_SET[k] = true end
local kind_rank = {}
for i, k in ipairs(M.KINDS) do kind_rank[k] = i end

-- JSON null, as cjson.decode gives it.
M.null = json.null

-- -- Lists of frames as numbers ---------------------------------------------------------------
-- Records are merged and ordered by their frames as text (symbolize.frame_text, one after the
-- other) and their Lua frames ("source:line:function"). Building one long string per record for
-- that made big reports slow: LuaJIT hashes a long string from a few of its bytes, and the keys
-- of many similar stacks, alike in those bytes, piled up in one hash chain. Instead each list of
-- frames gets a number (lists whose frames have the same texts, the same number: compared frame
-- by frame, in buckets by a hash of their frames' numbers), and a rank in the order of their texts.

local text_of = setmetatable({}, {__mode = "k"})   -- frame table -> its text

local function frame_text(f)
   local text = text_of[f]
   if not text then
      text = symbolize.frame_text(f)
      text_of[f] = text
   end
   return text
end

local function lua_frame_key(f)
   local text = text_of[f]
   if not text then
      text = ("%s:%s:%s"):format(f.source or "", f.line or "", f["function"] or "")
      text_of[f] = text
   end
   return text
end

local Lists = {}
Lists.__index = Lists

-- A numbering of lists whose items have the texts TEXT(item).
local function lists(text)
   return setmetatable({text = text, texts = {}, number_of_text = {}, number_of_item = {}, id_of = {},
                        first = {}, buckets = {}}, Lists)
end

-- The number of ITEM's text.
function Lists:item(x)
   local n = self.number_of_item[x]
   if not n then
      local text = self.text(x)
      n = self.number_of_text[text]
      if not n then
         n = #self.texts + 1
         self.texts[n] = text
         self.number_of_text[text] = n
      end
      self.number_of_item[x] = n
   end
   return n
end

-- Do lists A and B (already numbered) have the same texts?
function Lists:same(a, b)
   if #a ~= #b then return false end
   local number_of_item = self.number_of_item
   for i = 1, #a do
      if number_of_item[a[i]] ~= number_of_item[b[i]] then return false end
   end
   return true
end

-- The number of LIST.
function Lists:id(list)
   local id = self.id_of[list]
   if id then return id end
   local number_of_item, h = self.number_of_item, #list
   for i = 1, #list do
      local x = list[i]
      h = bit.tobit(h * 1000003 + (number_of_item[x] or self:item(x)))
   end
   -- A bucket is the number of the one list with that hash, or a table of several.
   local bucket = self.buckets[h]
   if type(bucket) == "number" then
      bucket = {bucket}
   end
   for _, other in ipairs(bucket or {}) do
      if self:same(self.first[other], list) then
         self.id_of[list] = other
         return other
      end
   end
   id = #self.first + 1
   self.first[id] = list
   if bucket then
      bucket[#bucket + 1] = id
      self.buckets[h] = bucket
   else
      self.buckets[h] = id
   end
   self.id_of[list] = id
   return id
end

-- Put the lists IDS (numbers), which have the same items before position AT, in order into
-- OUT: by the rank of their item at AT (a list that has none first), then the next item...
-- (a radix sort: no comparison function, which table.sort would call a million times).
local function order_lists(ids, at, first, item_rank, out)
   while true do
      if #ids == 1 then
         out[#out + 1] = ids[1]
         return
      end
      local groups, ranks = {}, {}
      for _, id in ipairs(ids) do
         local item = first[id][at]
         if item == nil then
            out[#out + 1] = id   -- it ends here: before the longer lists it starts
         else
            local r = item_rank(item)
            local g = groups[r]
            if not g then
               g = {}
               groups[r] = g
               ranks[#ranks + 1] = r
            end
            g[#g + 1] = id
         end
      end
      at = at + 1
      if #ranks ~= 1 then
         table.sort(ranks)
         for _, r in ipairs(ranks) do order_lists(groups[r], at, first, item_rank, out) end
         return
      end
      ids = groups[ranks[1]]
   end
end

-- Once every list has its number: rank[number] = the position of its lists in the order of
-- their texts, item by item (a list before the longer ones it starts), as a string comparison
-- of the texts joined would give (for texts without bytes below the joining one).
function Lists:ranks()
   if self.rank and self.ranked == #self.first then return self.rank end
   local texts, order = self.texts, {}
   for i = 1, #texts do order[i] = i end
   table.sort(order, function(a, b) return texts[a] < texts[b] end)
   local rank_of_number = {}
   for r, n in ipairs(order) do rank_of_number[n] = r end
   local number_of_item = self.number_of_item
   local function item_rank(x) return rank_of_number[number_of_item[x]] end
   local ids, sorted = {}, {}
   for id = 1, #self.first do ids[id] = id end
   if #ids > 0 then order_lists(ids, 1, self.first, item_rank, sorted) end
   local rank = {}
   for r, id in ipairs(sorted) do rank[id] = r end
   self.rank, self.ranked = rank, #self.first
   return rank
end

-- T[K], made a table if it was not.
local function sub(t, k)
   local s = t[k]
   if not s then
      s = {}
      t[k] = s
   end
   return s
end

-- One number for a pair of list numbers.
local function pair(a, b)
   return a * 2^26 + b
end

-- ITEMS sorted by FIELDS (functions of an item giving numbers, or strings, ascending), the first
-- field first: a stable counting sort per field, the last first (an LSD radix sort: table.sort
-- with a comparison function, called from C for each of a million comparisons, was slower).
local function sort_by(items, fields)
   local n = #items
   for f = #fields, 1, -1 do
      local get, values, distinct, seen = fields[f], {}, {}, {}
      for i = 1, n do
         local v = get(items[i])
         values[i] = v
         if not seen[v] then
            seen[v] = true
            distinct[#distinct + 1] = v
         end
      end
      if #distinct > 1 then
         table.sort(distinct)
         local start, count = {}, {}
         for r, v in ipairs(distinct) do
            seen[v] = r
            count[r] = 0
         end
         for i = 1, n do
            local r = seen[values[i]]
            count[r] = count[r] + 1
         end
         local at = 1
         for r = 1, #distinct do
            start[r] = at
            at = at + count[r]
         end
         local sorted = table_new(n, 0)
         for i = 1, n do
            local r = seen[values[i]]
            sorted[start[r]] = items[i]
            start[r] = start[r] + 1
         end
         items = sorted
      end
   end
   return items
end

-- Lua frames of the test machinery (ljleak's own modules, busted's, luassert's) are noise in a
-- leak record: drop them, and the C function (pcall, xpcall) through which they were entered.
-- If nothing else is left, keep them all.
local machinery_dirs

local function machinery(f)
   if not machinery_dirs then
      machinery_dirs = {(debug.getinfo(1, "S").source:match("^@(.*/)[^/]*$"))}
      for _, mod in ipairs {"busted.core", "luassert.assert"} do
         local path = package.searchpath(mod, package.path)
         machinery_dirs[#machinery_dirs + 1] = path and path:match("^(.*/)[^/]*$")
      end
   end
   for _, dir in ipairs(machinery_dirs) do
      if f.source and f.source:sub(1, #dir) == dir then return true end
   end
   return false
end

function M.user_frames(frames)
   local out = {}
   for i, f in ipairs(frames) do
      local outer = frames[i + 1]
      if not machinery(f) and not (f.source == "[C]" and (not outer or machinery(outer))) then
         out[#out + 1] = f
      end
   end
   return #out > 0 and out or frames
end

-- "file.lua:12 (name)", and what an approximate location means; "[t/foo.t:57]": the line of the
-- test file it came from (test-nginx: a handler's line in its Test::Nginx block).
function M.lua_frame_text(f)
   local where = f.line and ("%s:%d"):format(f.source or "?", f.line) or (f.source or "?")
   if f.test_file and f.test_file ~= M.null and f.test_line and f.test_line ~= M.null then
      where = ("%s [%s:%d]"):format(where, f.test_file, f.test_line)
   end
   local what = f["function"] and f["function"] ~= M.null and f["function"] or nil
   if f.approximate and f.approximate ~= M.null then
      return ("%s (%sstart of the JIT trace that ran: the exact line is not known)"):format(
         where, what and (what .. ", ") or "")
   end
   return what and ("%s (%s)"):format(where, what) or where
end

local function zero_summary()
   local s = {}
   for _, k in ipairs(M.KINDS) do s[k] = {blocks = 0, bytes = 0} end
   s.suppressed = {blocks = 0, bytes = 0}
   return s
end

-- Totals per kind over LEAKS; suppressed records count only under `suppressed`.
function M.summarize(leaks)
   local s = zero_summary()
   for _, leak in ipairs(leaks) do
      local slot = (leak.suppressed_by ~= nil and leak.suppressed_by ~= M.null) and s.suppressed or s[leak.kind]
      if slot then
         slot.blocks = slot.blocks + leak.blocks
         slot.bytes = slot.bytes + leak.bytes
      end
   end
   return s
end

-- The numbering of frame lists and Lua frame lists that M.build made for a report (the text
-- report groups its records by them again).
local numbering_of = setmetatable({}, {__mode = "k"})

-- -- Building records ------------------------------------------------------------------------

-- Build the report from PROCS (M.collect). OPTS: engine, command (argv list), exit_status, version,
-- symbolizer (a ljleak.symbolize object; default: a new one with OPTS.tracker).
-- Leaks of one process, kind and symbolized stack are merged into one record. Records of one
-- site share their frames (and of one Lua stack, their Lua frames).
function M.build(procs, opts)
   opts = opts or {}
   local sym = opts.symbolizer or symbolize.new({tracker = opts.tracker})
   local processes = {}
   local frame_lists, lua_lists = lists(frame_text), lists(lua_frame_key)
   local frames_of, lua_of = {}, {}   -- per site, per interned Lua stack
   local leaks, by_key, ids = {}, {}, {}
   local no_lua = {}
   for _, proc in ipairs(procs) do
      processes[#processes + 1] = {pid = proc.pid, ppid = proc.ppid, exe = proc.exe, lua_state = proc.lua_state,
                                   truncated = proc.truncated or nil, stats = proc.stats, checked = true,
                                   lua = proc.lua_vm and "unavailable: " .. proc.lua_vm or nil,
                                   unstopped_threads = proc.unstopped}
      for _, leak in ipairs(proc.leaks) do
         local site = proc.sites[leak.site]
         local frames = frames_of[site]
         if not frames then
            frames = sym:frames(proc, site)
            frames_of[site] = frames
         end
         local raw_lua = site.lua and proc.lua and proc.lua[site.lua] or no_lua
         local lua = lua_of[raw_lua]
         if not lua then
            lua = M.user_frames(raw_lua)
            lua_of[raw_lua] = lua
         end
         local ctx = site.ctx and proc.ctx and proc.ctx[site.ctx]
         local test = ctx and ctx.tag or nil
         local note = ctx and ctx.note or nil
         if site.dropped then
            note = "the stack was not recorded: the tracker's site table was full (LJLEAK_MAX_SITES)"
         end
         local fid, lid = frame_lists:id(frames), lua_lists:id(lua)
         local slot = sub(sub(sub(sub(by_key, proc.pid or false), leak.kind), test or false), note or false)
         local rec = slot[pair(fid, lid)]
         if rec then
            rec.blocks = rec.blocks + leak.blocks
            rec.bytes = rec.bytes + leak.bytes
         else
            rec = {kind = leak.kind, blocks = leak.blocks, bytes = leak.bytes, pid = proc.pid,
                   frames = frames, lua = lua, test = test, note = note, suppressed_by = nil}
            slot[pair(fid, lid)] = rec
            ids[rec] = pair(fid, lid)
            leaks[#leaks + 1] = rec
         end
      end
   end
   -- By pid, kind, size (biggest first), frames, Lua frames, test and note.
   local frame_rank, lua_rank = frame_lists:ranks(), lua_lists:ranks()
   leaks = sort_by(leaks, {
      function(r) return r.pid or 0 end,
      function(r) return kind_rank[r.kind] or 9 end,   -- (a snapshot's records: "live")
      function(r) return -r.bytes end,
      function(r) return frame_rank[math.floor(ids[r] / 2^26)] end,
      function(r) return lua_rank[ids[r] % 2^26] end,
      function(r) return r.test or "" end,
      function(r) return r.note or "" end,
   })
   local report = {
      schema = M.SCHEMA, tool = "ljleak", version = opts.version or "scm", engine = opts.engine or "tracker",
      command = opts.command or {}, exit_status = opts.exit_status,
      summary = M.summarize(leaks), leaks = leaks, processes = processes, errors = opts.errors or {},
   }
   numbering_of[report] = {frames = frame_lists, lua = lua_lists}
   return report
end

-- Number of unsuppressed leak records whose kind is in KINDS (a set: {definite = true, ...}).
function M.failing(report, kinds)
   local n = 0
   for _, leak in ipairs(report.leaks or {}) do
      if kinds[leak.kind] and (leak.suppressed_by == nil or leak.suppressed_by == M.null) then
         n = n + 1
      end
   end
   for _, e in ipairs(report.errors or {}) do  -- errors always fail the run
      if e.suppressed_by == nil or e.suppressed_by == M.null then n = n + 1 end
   end
   return n
end

-- -- JSON ------------------------------------------------------------------------------------

-- Mark T as a JSON array (so that an empty one is written as []).
M.array = json.array

-- JSON text for any value built from tables, strings, numbers, booleans and M.null.
M.encode = json.encode

local EMPTY = json.array()
local TOP_DEFAULTS = {command = EMPTY, exit_status = M.null, leaks = EMPTY, errors = EMPTY, problems = EMPTY}

-- -- Text summary --------------------------------------------------------------------------

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

local function is_suppressed(r)
   return r.suppressed_by ~= nil and r.suppressed_by ~= M.null
end

-- Unsuppressed records grouped by kind and stack, biggest first.
local function groups(report, show_reachable)
   local numbering = numbering_of[report] or {frames = lists(frame_text), lua = lists(lua_frame_key)}
   local frame_lists, lua_lists = numbering.frames, numbering.lua
   local list, by_key = {}, {}
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) and (show_reachable or leak.kind ~= "reachable") then
         local test = leak.test ~= M.null and leak.test or nil
         local note = leak.note ~= M.null and leak.note or nil
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
   for _, k in ipairs(M.KINDS) do
      local m = more[k]
      if m then
         line(("... and %d more %s records (%s); see %s"):format(m.records, k, amount(m), opts.full or "--json"))
         line("")
      end
   end
   for _, e in ipairs(report.errors or {}) do
      if e.suppressed_by == nil or e.suppressed_by == M.null then
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
      local test = leak.test ~= M.null and leak.test or nil
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
         local pid = p.pid ~= nil and p.pid ~= M.null and ("pid " .. p.pid) or nil
         local file = p.file ~= nil and p.file ~= M.null and p.file or nil
         local who = file and (pid and ("%s (%s)"):format(file, pid) or file) or pid
         line("  " .. (who and who .. ": " or "") .. p.message)
      end
      line("")
   end
   local summary = report.summary or M.summarize(report.leaks or {})
   line("LEAK SUMMARY:")
   local names = {}
   for _, k in ipairs(M.KINDS) do names[#names + 1] = k end
   names[#names + 1] = "suppressed"
   for _, k in ipairs(names) do
      line(("  %10s: %s"):format(k, amount(summary[k] or {blocks = 0, bytes = 0})))
   end
   local reachable = summary.reachable or {blocks = 0}
   if not opts.show_reachable and reachable.blocks > 0 then
      line("Reachable blocks are not listed; rerun with --show-reachable to see where they were allocated.")
   end
   suppressions_table(line, report.suppressions)
   return table.concat(out, "\n") .. "\n"
end

-- -- Formatters ------------------------------------------------------------------------------

-- Each formatter: (report, opts, sink) writes its text into SINK (json.sink), calling json.drain
-- between items so that a big report goes out in chunks.
M.formatters = {}

function M.formatters.json(report, _, sink)
   json.write(report, sink, TOP_DEFAULTS)
   sink.b:put("\n")
end

function M.formatters.text(report, opts, sink)
   sink.b:put(text_summary(report, opts))
end

-- A frame's name in folded stacks: its text without the object, no ';', no trailing blanks.
local folded_name_of = setmetatable({}, {__mode = "k"})

local function folded_name(f)
   local name = folded_name_of[f]
   if not name then
      name = frame_text(f):gsub(" %[[^%]]*%]$", ""):gsub(";", ","):gsub("%s+$", "")
      folded_name_of[f] = name
   end
   return name
end

-- A record's folded line: its kind, then its frames outermost first: C frames down to LuaJIT's
-- VM, the Lua frames it ran, then the C frames Lua called (the allocation function last).
local function folded_line(leak)
   local frames, names = leak.frames or EMPTY, {leak.kind}
   local vm = #frames + 1  -- the innermost frame in LuaJIT's VM
   for i, f in ipairs(frames) do
      local obj = f.object ~= M.null and f.object or ""
      if obj:match("/luajit[^/]*$") or obj:match("libluajit") then
         vm = i
         break
      end
   end
   for i = #frames, vm, -1 do names[#names + 1] = folded_name(frames[i]) end
   for i = #(leak.lua or EMPTY), 1, -1 do
      local f = leak.lua[i]
      names[#names + 1] = ("%s:%s"):format(f.source or "?", f.line or "?"):gsub(";", ","):gsub("%s+$", "")
   end
   for i = math.min(vm - 1, #frames), 1, -1 do names[#names + 1] = folded_name(frames[i]) end
   return table.concat(names, ";") .. " " .. leak.bytes
end

-- Folded stacks (Brendan Gregg's flamegraph.pl, speedscope): "frame;frame;frame BYTES" per
-- unsuppressed record, the kind as the root frame.
function M.formatters.folded(report, _, sink)
   local lines = {}
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) then lines[#lines + 1] = folded_line(leak) end
   end
   table.sort(lines)
   for _, l in ipairs(lines) do
      sink.b:put(l, "\n")
      json.drain(sink)
   end
end

local xml_escapes = {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;"}

-- Text for XML and HTML: markup characters escaped, control characters as '?', and a byte that
-- is not UTF-8 as the character of its number (U+0080 to U+00FF).
local function xml(s)
   s = tostring(s):gsub("[&<>\"']", xml_escapes):gsub("[%z\1-\8\11\12\14-\31]", "?")
   return (json.fix_utf8(s, json.latin1))
end

-- One record as readable text (its kind, size, test, Lua and C frames).
local function record_text(leak)
   return text_summary({leaks = {leak}}, {brief = true, show_reachable = true})
end

-- JUnit XML: one test case per unsuppressed record of a failing kind (opts.fail_on, default
-- definite) and per error, each a failure; one passing case when there is none. With opts.cases
-- ({test, class, name} each: test-nginx's blocks), one test case per case instead, failing with
-- the records and errors whose `test` it is; the others keep a test case each.
function M.formatters.junit(report, opts, sink)
   local fail_on = (opts and opts.fail_on) or {definite = true}
   local function failing(r) return fail_on[r.kind] and not is_suppressed(r) end
   local cases, of_case = opts and opts.cases or {}, {}
   for _, c in ipairs(cases) do of_case[c.test] = {texts = {}, blocks = 0, bytes = 0, errors = 0} end
   local failures = 0
   -- A failing record or error R: true if it has no case (a test case of its own), else put into its case's.
   local function count(r, is_error)
      local mine = of_case[r.test]
      if not mine or #mine.texts == 0 then failures = failures + 1 end
      if not mine then return true end
      if is_error then
         mine.errors = mine.errors + 1
         mine.texts[#mine.texts + 1] = text_summary({errors = {r}}, {brief = true})
      else
         mine.blocks, mine.bytes = mine.blocks + r.blocks, mine.bytes + r.bytes
         mine.texts[#mine.texts + 1] = record_text(r)
      end
      return false
   end
   local own = {}
   for _, leak in ipairs(report.leaks or {}) do
      if failing(leak) then own[leak] = count(leak, false) end
   end
   for _, e in ipairs(report.errors or {}) do
      if not is_suppressed(e) then own[e] = count(e, true) end
   end
   local b = sink.b
   local loose = failures
   for _, c in ipairs(cases) do loose = loose - (#of_case[c.test].texts > 0 and 1 or 0) end
   b:put('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n', ('  <testsuite name="ljleak" tests="%d" '
      .. 'failures="%d" errors="0">\n'):format(math.max(loose + #cases, 1), failures))
   for _, c in ipairs(cases) do
      local mine = of_case[c.test]
      if #mine.texts == 0 then
         b:put(('    <testcase classname="%s" name="%s"/>\n'):format(xml(c.class), xml(c.name)))
      else
         local what = {}
         if mine.blocks > 0 then what[1] = "lost " .. amount(mine) end
         if mine.errors > 0 then what[#what + 1] = plural(mine.errors, "error") end
         b:put(('    <testcase classname="%s" name="%s">\n      <failure type="%s" message="%s">%s</failure>\n'
            .. '    </testcase>\n'):format(xml(c.class), xml(c.name), mine.blocks > 0 and "leak" or "error",
            xml(table.concat(what, ", ")), xml(table.concat(mine.texts, "\n"))))
      end
      json.drain(sink)
   end
   for _, leak in ipairs(report.leaks or {}) do
      if own[leak] then
         local test = leak.test ~= M.null and leak.test or nil
         local where = leak.lua and leak.lua[1] and ("%s:%s"):format(leak.lua[1].source, leak.lua[1].line or "?")
            or symbolize.frame_text(leak.frames and leak.frames[2] or leak.frames[1] or {})
         local name = ("%s: %s in %s block%s at %s"):format(leak.kind, plural(leak.bytes, "byte"),
            leak.blocks, leak.blocks == 1 and "" or "s", where)
         b:put(('    <testcase classname="%s" name="%s">\n      <failure type="%s" '
            .. 'message="%s">%s</failure>\n    </testcase>\n'):format(xml("ljleak." .. (test or "leaks")), xml(name),
            xml(leak.kind), xml(name), xml(record_text(leak))))
         json.drain(sink)
      end
   end
   for _, e in ipairs(report.errors or {}) do
      if own[e] then
         b:put(('    <testcase classname="ljleak.errors" name="%s">\n      <failure type="%s" '
            .. 'message="%s">%s</failure>\n    </testcase>\n'):format(xml(e.kind .. ": " .. e.message), xml(e.kind),
            xml(e.message), xml(e.message)))
      end
   end
   if failures == 0 and #cases == 0 then b:put('    <testcase classname="ljleak" name="no leaks"/>\n') end
   b:put("  </testsuite>\n</testsuites>\n")
end

-- A self-contained HTML page: the summary, then each unsuppressed record with its frames.
function M.formatters.html(report, opts, sink)
   local b = sink.b
   local summary = report.summary or M.summarize(report.leaks or {})
   b:put("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ljleak report</title>\n<style>\n")
   b:put("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
      .. "padding:4px 8px;text-align:right} pre{background:#f6f6f6;padding:8px} .definite{color:#b00}"
      .. " .indirect{color:#b60} .possible{color:#960} .reachable{color:#666}</style></head><body>\n")
   b:put(("<h1>ljleak: %s</h1>\n"):format(xml(table.concat(report.command or {}, " "))))
   b:put(("<p>engine %s, exit status %s</p>\n"):format(xml(report.engine or "?"), xml(tostring(report.exit_status))))
   b:put("<table><tr><th>kind</th><th>blocks</th><th>bytes</th></tr>\n")
   for _, k in ipairs {"definite", "indirect", "possible", "reachable", "suppressed"} do
      local t = summary[k] or {blocks = 0, bytes = 0}
      b:put(('<tr><td class="%s">%s</td><td>%d</td><td>%d</td></tr>\n'):format(k, k, t.blocks, t.bytes))
   end
   b:put("</table>\n")
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) and (leak.kind ~= "reachable" or (opts and opts.show_reachable)) then
         b:put(('<h3 class="%s">%s: %s in %d block%s</h3><pre>%s</pre>\n'):format(leak.kind, leak.kind,
            plural(leak.bytes, "byte"), leak.blocks, leak.blocks == 1 and "" or "s", xml(record_text(leak))))
         json.drain(sink)
      end
   end
   for _, e in ipairs(report.errors or {}) do
      b:put(("<h3 class=\"definite\">error: %s</h3><pre>%s</pre>\n"):format(xml(e.kind), xml(e.message)))
   end
   b:put("</body></html>\n")
end

-- Write REPORT in format NAME to SINK (json.sink), all of it drained. OPTS: the formatter's.
function M.render(report, name, opts, sink)
   local formatter = M.formatters[name]
   if not formatter then error("unknown report format '" .. tostring(name) .. "'") end
   formatter(report, opts, sink)
   json.drain(sink, true)
end

-- REPORT in format NAME, as one string (small reports: a test's message, the text summary).
function M.format(report, name, opts)
   local sink = json.sink()
   M.render(report, name, opts, sink)
   return sink.b:tostring()
end

-- -- Files -----------------------------------------------------------------------------------

-- For each output format: is a file whose content starts with HEAD (all of it when COMPLETE)
-- one that ljleak wrote in it, so that overwriting it loses nothing the user wrote by hand?
M.owns = {}

local function starts_with(prefix)
   return function(head)
      return head:sub(1, #prefix) == prefix
   end
end

M.owns.html = starts_with('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ljleak report</title>')
M.owns.junit = starts_with('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n  <testsuite name="ljleak"')

function M.owns.folded(head, complete)
   if not complete then head = head:match("^(.*\n)") or "" end
   for line in head:gmatch("[^\n]+") do
      if not (line:match("^%a+;.* %d+$") and M.KINDS_SET[line:match("^(%a+);")]) then return false end
   end
   return true
end

-- An ljleak JSON report of any schema version: as this writer starts it, or any JSON object
-- with "tool": "ljleak" and a numeric "schema".
function M.owns.json(head, complete)
   if head:match('^%s*{%s*"schema"%s*:%s*%d+%s*,%s*"tool"%s*:%s*"ljleak"') then return true end
   if not complete then return false end
   local ok, data = pcall(cjson.decode, head)
   return ok and type(data) == "table" and data.tool == "ljleak" and type(data.schema) == "number"
end

-- Write REPORT in format NAME to TARGET (from outfile.check). Returns true or nil, message.
function M.write_to(target, report, name, opts)
   return outfile.write(target, function(write)
      M.render(report, name, opts, json.sink(write))
   end)
end

-- Write REPORT in format NAME to the file at PATH, by the rules of outfile.check.
-- Returns true or nil, message.
function M.write(report, path, name, opts)
   local targets, err = outfile.check({{option = "--" .. name, path = path, owns = M.owns[name]}})
   if not targets then return nil, err end
   return M.write_to(targets[1], report, name, opts)
end

-- -- Reading a saved report ------------------------------------------------------------------
-- `ljleak report FILE.json` reads what `--json` wrote; a file of another shape is refused with
-- the JSON path where it broke (indexes from 0, as jq writes them: leaks[3].frames).

local function is_integer(v)
   return type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53
end

local function is_list(v)
   if type(v) ~= "table" then return false end
   local n = #v
   for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then return false end
   end
   return true
end

local function is_map(v)
   if type(v) ~= "table" then return false end
   for k in pairs(v) do
      if type(k) ~= "string" then return false end
   end
   return true
end

-- What V is, for a message.
local function describe(v)
   if v == M.null then return "null" end
   local t = type(v)
   if t == "string" then return ("a string (%q)"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
   if t == "number" or t == "boolean" then return ("%s (%s)"):format(t == "number" and "a number" or "a boolean",
      tostring(v)) end
   if next(v) == nil then return "an empty array" end
   return is_list(v) and "an array" or "an object"
end

-- Shapes: {what = "...", test = function(v)}; {array = shape}; {fields = {name = shape},
-- required = {name, ...}}. A field may be absent or null unless required.
local function scalar(what, test) return {what = what, test = test} end
local STRING = scalar("a string", function(v) return type(v) == "string" end)
local INTEGER = scalar("an integer", is_integer)
local COUNT = scalar("a count (an integer >= 0)", function(v) return is_integer(v) and v >= 0 end)
local BOOLEAN = scalar("true or false", function(v) return type(v) == "boolean" end)
local KIND = scalar("a leak kind (" .. table.concat(M.KINDS, ", ") .. ")", function(v) return M.KINDS_SET[v] end)
local function array_of(item) return {what = "an array", array = item} end
local function object(fields, required) return {what = "an object", fields = fields, required = required or {}} end

local C_FRAME = object({["function"] = STRING, file = STRING, dir = STRING, line = INTEGER, object = STRING,
                        offset = STRING, address = STRING})
local LUA_FRAME = object({source = STRING, line = INTEGER, ["function"] = STRING, approximate = BOOLEAN,
                          test_file = STRING, test_line = INTEGER})
local AMOUNT = object({blocks = COUNT, bytes = COUNT}, {"blocks", "bytes"})
local REPORT = object({
   schema = INTEGER, tool = STRING, version = STRING, engine = STRING, command = array_of(STRING),
   exit_status = INTEGER,
   summary = object({definite = AMOUNT, indirect = AMOUNT, possible = AMOUNT, reachable = AMOUNT,
                     suppressed = AMOUNT}),
   leaks = array_of(object({kind = KIND, blocks = COUNT, bytes = COUNT, pid = INTEGER, frames = array_of(C_FRAME),
                            lua = array_of(LUA_FRAME), test = STRING, note = STRING, suppressed_by = STRING},
                           {"kind", "blocks", "bytes"})),
   errors = array_of(object({kind = STRING, message = STRING, pid = INTEGER, count = COUNT, test = STRING,
                             lua = array_of(LUA_FRAME), frames = array_of(C_FRAME), suppressed_by = STRING,
                             aux = array_of(object({what = STRING, frames = array_of(C_FRAME)}))},
                            {"kind", "message"})),
   processes = array_of(object({pid = INTEGER, ppid = INTEGER, exe = STRING, lua_state = STRING})),
   suppressions = array_of(object({name = STRING, file = STRING, line = INTEGER, records = COUNT, blocks = COUNT,
                                   bytes = COUNT, count = COUNT}, {"name"})),
}, {"schema", "tool", "leaks"})

-- Nil if V (at PATH) has SHAPE, else "PATH: what was expected, what was found".
local function check_shape(v, shape, path)
   if shape.test then
      if shape.test(v) then return nil end
   elseif shape.array then
      if is_list(v) then
         for i, item in ipairs(v) do
            local err = check_shape(item, shape.array, ("%s[%d]"):format(path, i - 1))
            if err then return err end
         end
         return nil
      end
   elseif is_map(v) then
      for _, name in ipairs(shape.required) do
         if v[name] == nil or v[name] == M.null then
            return ("%s: missing \"%s\""):format(path ~= "" and path or "the top object", name)
         end
      end
      for name, field in pairs(shape.fields) do
         local x = v[name]
         if x ~= nil and x ~= M.null then
            local err = check_shape(x, field, path ~= "" and path .. "." .. name or name)
            if err then return err end
         end
      end
      return nil
   end
   return ("%s: expected %s, found %s"):format(path ~= "" and path or "the top level", shape.what, describe(v))
end

local function strip_nulls(v)
   if type(v) ~= "table" then return v end
   for k, x in pairs(v) do
      if x == M.null then v[k] = nil else strip_nulls(x) end
   end
   return v
end

-- Decode the JSON report in TEXT (NAME: its file, for messages). Returns the report (JSON nulls
-- removed) or nil and one line: what was expected and where it broke.
function M.decode(text, name)
   name = name or "report"
   if text:match("^%s*$") then return nil, ("%s: empty; expected a JSON report (ljleak run --json)"):format(name) end
   local ok, data = pcall(cjson.decode, text)
   if not ok then
      local msg = tostring(data)
      local at = tonumber(msg:match("at character (%d+)") or "")
      if msg:match("T_END") or (at and at > #text) then
         return nil, ("%s: the JSON ends early, at byte %d (a truncated file?)"):format(name, #text)
      end
      return nil, ("%s: not valid JSON: %s"):format(name, msg)
   end
   if not is_map(data) or data.tool ~= "ljleak" then
      return nil, ("%s: not an ljleak report (expected a JSON object with \"tool\": \"ljleak\")"):format(name)
   end
   if data.schema ~= M.SCHEMA then
      return nil, ("%s: report schema %s; this ljleak reads schema %d"):format(name, tostring(data.schema), M.SCHEMA)
   end
   local err = check_shape(data, REPORT, "")
   if err then return nil, ("%s: %s"):format(name, err) end
   return strip_nulls(data)
end

-- Read the JSON report at PATH. Returns the report or nil, message.
function M.read(path)
   local mode = lfs.attributes(path, "mode")
   if mode == "directory" then
      return nil, ("%s: is a directory; expected a JSON report file"):format(path)
   end
   local text, err = util.read_file(path)
   if not text then return nil, err or ("%s: cannot read it"):format(path) end
   return M.decode(text, path)
end

return M
