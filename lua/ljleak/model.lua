-- The leak-record model (JSON schema 1, shared/DESIGN.md): records built from processes (the one
-- proc shape of ljleak.raw), merged and ordered, counted by kind, and judged against --fail-on.
local bit = require "bit"
local table_new = require "table.new"

local const = require "ljleak.const"
local json = require "ljleak.json"
local symbolize = require "ljleak.symbolize"
local sub = require("ljleak.util").sub

local M = {}

M.SCHEMA = 1
M.KINDS = const.KINDS
M.KINDS_SET = {}
for _, k in ipairs(M.KINDS) do M.KINDS_SET[k] = true end
local kind_rank = {}
for i, k in ipairs(M.KINDS) do kind_rank[k] = i end
M.kind_rank = kind_rank

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


local function zero_summary()
   local s = {}
   for _, k in ipairs(M.KINDS) do s[k] = {blocks = 0, bytes = 0} end
   s.suppressed = {blocks = 0, bytes = 0}
   return s
end

-- Totals per kind over LEAKS; suppressed records count only under `suppressed`. With ERRORS (the
-- report's), also `error_totals`: {records = the unsuppressed error records, count = their
-- occurrences} (Valgrind's "ERROR SUMMARY", leaks not counted).
function M.summarize(leaks, errors)
   local s = zero_summary()
   for _, leak in ipairs(leaks) do
      local slot = (leak.suppressed_by ~= nil and leak.suppressed_by ~= M.null) and s.suppressed or s[leak.kind]
      if slot then
         slot.blocks = slot.blocks + leak.blocks
         slot.bytes = slot.bytes + leak.bytes
      end
   end
   if errors then
      local t = {records = 0, count = 0}
      for _, e in ipairs(errors) do
         if not M.is_suppressed(e) then t.records, t.count = t.records + 1, t.count + (e.count or 1) end
      end
      s.error_totals = t
   end
   return s
end

-- -- Heap totals -----------------------------------------------------------------------------
-- Valgrind's HEAP SUMMARY: {in_use = {blocks, bytes}, allocs, frees, allocated}: the blocks still
-- live at exit (every kind, suppressed or not), the allocations made (a realloc is one, and a free
-- of the old block), the frees, and the bytes allocated in all.

-- PROC's heap totals: Valgrind's (proc.heap, from its xtree file), or the tracker's from its
-- stats (its frees: the allocations it recorded that are no longer live). Nil if unknown.
local function proc_heap(proc)
   if proc.heap then return proc.heap end
   local st = proc.stats or {}
   if not st.allocs then return nil end
   return {in_use = {blocks = st.live_blocks or 0, bytes = st.live_bytes or 0}, allocs = st.allocs,
           frees = math.max(0, st.allocs - (st.live_blocks or 0)), allocated = st.allocated or 0}
end

-- The heap totals of PROCESSES (the report's) added up, or nil when none has any.
function M.heap_totals(processes)
   local t
   for _, p in ipairs(processes or {}) do
      local h = p.heap
      if h then
         t = t or {in_use = {blocks = 0, bytes = 0}, allocs = 0, frees = 0, allocated = 0}
         t.in_use.blocks, t.in_use.bytes = t.in_use.blocks + h.in_use.blocks, t.in_use.bytes + h.in_use.bytes
         t.allocs, t.frees, t.allocated = t.allocs + h.allocs, t.frees + h.frees, t.allocated + h.allocated
      end
   end
   return t
end

-- -- Order -----------------------------------------------------------------------------------
-- Definite records first, each followed by the indirect records it holds (as Valgrind's loss
-- records and LeakSanitizer's direct and indirect leaks read), then the indirect records whose
-- owner is not known (Valgrind does not say it) or not listed, then possible, then reachable;
-- biggest first within a kind.

-- ITEMS (already sorted by kind and size) with each item that OWNER(item) names moved right after
-- that owner (the owned ones in their order). An owner not among ITEMS leaves its items in place.
function M.after_owners(items, owner)
   local present, owned = {}, {}
   for _, it in ipairs(items) do present[it] = true end
   for _, it in ipairs(items) do
      local o = owner(it)
      if o and present[o] then
         local list = sub(owned, o)
         list[#list + 1] = it
      end
   end
   local out = {}
   for _, it in ipairs(items) do
      local o = owner(it)
      if not (o and present[o]) then
         out[#out + 1] = it
         for _, x in ipairs(owned[it] or {}) do out[#out + 1] = x end
      end
   end
   return out
end

-- The numbering of frame lists and Lua frame lists that M.build made for a report (the text
-- report groups its records by them again).
local numbering_of = setmetatable({}, {__mode = "k"})

-- The numbering of REPORT's frame lists and Lua frame lists (made by M.build, or new ones), with
-- the helpers the text report groups records by again.
function M.numbering(report)
   return numbering_of[report] or {frames = lists(frame_text), lua = lists(lua_frame_key)}
end
M.sub, M.pair, M.sort_by, M.frame_text = sub, pair, sort_by, frame_text

-- LEAKS in report order: by kind, size (biggest first), pid, frames, Lua frames, test and note;
-- then each indirect record right after the definite one that holds it (OWNER_OF[record]).
-- IDS[record]: pair(its frame list's number, its Lua frame list's number) in NUMBERING. Each
-- record then has its number (`id`, from 1), and an indirect one the number of its owner (`owner`).
function M.order(leaks, ids, numbering, owner_of)
   local frame_rank, lua_rank = numbering.frames:ranks(), numbering.lua:ranks()
   local sorted = sort_by(leaks, {
      function(r) return kind_rank[r.kind] or 9 end,   -- (a snapshot's records: "live")
      function(r) return -r.bytes end,
      function(r) return r.pid or 0 end,
      function(r) return frame_rank[math.floor(ids[r] / 2^26)] end,
      function(r) return lua_rank[ids[r] % 2^26] end,
      function(r) return r.test or "" end,
      function(r) return r.note or "" end,
   })
   owner_of = owner_of or {}
   sorted = M.after_owners(sorted, function(r) return owner_of[r] end)
   for i, r in ipairs(sorted) do r.id = i end
   for _, r in ipairs(sorted) do r.owner = owner_of[r] and owner_of[r].id or nil end
   return sorted
end

-- Records merged as they are added: those of one process, kind, test, note, suppression, owner
-- and stack (frames and Lua frames, numbered by NUMBERING) are one, their blocks and bytes added
-- up. merger:add(pid, kind, test, note, suppressed_by, frames, lua, blocks, bytes, make, owner)
-- adds to the record of that key, or makes it with MAKE() (a record with those blocks and bytes);
-- OWNER: the definite record (one this merger made) that holds an indirect one. Owners are added
-- before what they hold. merger:records() gives them in report order (M.order), numbered.
local Merger = {}
Merger.__index = Merger

function M.merger(numbering)
   return setmetatable({numbering = numbering, by_key = {}, leaks = {}, ids = {}, owner_of = {}}, Merger)
end

function Merger:add(pid, kind, test, note, suppressed_by, frames, lua, blocks, bytes, make, owner)
   local id = pair(self.numbering.frames:id(frames), self.numbering.lua:id(lua))
   local slot = sub(sub(sub(sub(sub(sub(self.by_key, pid or false), kind), test or false), note or false),
                        suppressed_by or false), owner or false)
   local rec = slot[id]
   if rec then
      rec.blocks, rec.bytes = rec.blocks + blocks, rec.bytes + bytes
   else
      rec = make()
      slot[id] = rec
      self.ids[rec], self.owner_of[rec] = id, owner
      self.leaks[#self.leaks + 1] = rec
   end
   return rec
end

function Merger:records()
   return M.order(self.leaks, self.ids, self.numbering, self.owner_of)
end

-- Is frame F in LuaJIT's VM (an object named luajit* or libluajit*)?
function M.vm_frame(f)
   local obj = f.object
   if type(obj) ~= "string" then return false end
   local base = obj:match("[^/]*$")
   return base:match("^luajit") ~= nil or base:match("^libluajit") ~= nil
end

-- -- Building records ------------------------------------------------------------------------

-- Symbolize the stacks of PROC's leaks with SYM before the report is built (with the same SYM),
-- while the command still runs: build then finds them named.
function M.symbolize_ahead(proc, sym)
   if proc.symbolized then return end
   for _, leak in ipairs(proc.leaks) do
      local site = proc.sites[leak.site]
      if site then sym:frames(proc, site) end
   end
end

-- Build the report from PROCS (ljleak.raw's proc shape, from either engine's reader). OPTS: engine,
-- command (argv list), exit_status, version, errors, symbolizer (a ljleak.symbolize object;
-- default: a new one with OPTS.tracker).
-- Leaks of one process, kind and symbolized stack are merged into one record. Records of one
-- site share their frames (and of one Lua stack, their Lua frames).
function M.build(procs, opts)
   opts = opts or {}
   local sym = opts.symbolizer or symbolize.new({tracker = opts.tracker})
   local processes = {}
   local numbering = {frames = lists(frame_text), lua = lists(lua_frame_key)}
   local merger = M.merger(numbering)
   local frames_of, lua_of = {}, {}   -- per site, per interned Lua stack
   local definite_of = {}   -- a site's definite record (the owner of indirect ones)
   local no_lua = {}
   local proc_errors = {}   -- the processes' own (Valgrind's): by pid, biggest count first
   for _, proc in ipairs(procs) do
      processes[#processes + 1] = {pid = proc.pid, ppid = proc.ppid, exe = proc.exe, lua_state = proc.lua_state,
                                   truncated = proc.truncated or nil, stats = proc.stats, checked = true,
                                   lua = proc.lua_vm and "unavailable: " .. proc.lua_vm or nil,
                                   unstopped_threads = proc.unstopped, command = proc.command,
                                   fatal_signal = proc.fatal_signal, heap = proc_heap(proc)}
      for _, rec in ipairs(proc.errors or {}) do
         rec.pid = proc.pid
         proc_errors[#proc_errors + 1] = rec
      end
      -- Indirect records last: the definite records that hold them exist by then.
      local ordered = {}
      for _, leak in ipairs(proc.leaks) do
         if leak.kind ~= "indirect" then ordered[#ordered + 1] = leak end
      end
      for _, leak in ipairs(proc.leaks) do
         if leak.kind == "indirect" then ordered[#ordered + 1] = leak end
      end
      for _, leak in ipairs(ordered) do
         local site = proc.sites[leak.site]
         local frames = frames_of[site]
         if not frames then
            frames = proc.symbolized and site.frames or sym:frames(proc, site)
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
         local owner = leak.owner and proc.sites[leak.owner] and definite_of[proc.sites[leak.owner]]
         local rec = merger:add(proc.pid, leak.kind, test, note, nil, frames, lua, leak.blocks, leak.bytes, function()
            return {kind = leak.kind, blocks = leak.blocks, bytes = leak.bytes, pid = proc.pid,
                    frames = frames, lua = lua, test = test, note = note, suppressed_by = nil}
         end, owner)
         if leak.kind == "definite" then definite_of[site] = rec end
      end
   end
   local leaks = merger:records()
   table.sort(proc_errors, function(a, b)
      if a.pid ~= b.pid then return (a.pid or 0) < (b.pid or 0) end
      return a.count > b.count
   end)
   local errors = {}
   for _, e in ipairs(opts.errors or {}) do errors[#errors + 1] = e end
   for _, e in ipairs(proc_errors) do errors[#errors + 1] = e end
   local report = {
      schema = M.SCHEMA, tool = "ljleak", version = opts.version or "scm", engine = opts.engine or "tracker",
      command = opts.command or {}, exit_status = opts.exit_status,
      summary = M.summarize(leaks, errors), heap = M.heap_totals(processes), leaks = leaks, processes = processes,
      errors = errors,
   }
   numbering_of[report] = numbering
   return report
end

-- The position in FRAMES of the first frame in LuaJIT's VM (in an object named luajit* or
-- libluajit*, or in JIT code: an address in no object), or nil. The frames before it are the C
-- code that Lua called; the Lua frames say where that call was made.
function M.first_vm_frame(frames)
   for i, f in ipairs(frames) do
      if type(f.object) == "string" then
         if M.vm_frame(f) then return i end
      elseif i > 1 and f.address and f.address ~= M.null and not f["function"] then
         return i
      end
   end
end

-- Does leak record R fail a run whose --fail-on kinds are KINDS (a set: {definite = true, ...})?
-- Not when it is suppressed, or of a site a baseline accepts (R.baseline == "known").
function M.fails(r, kinds)
   return kinds[r.kind] and (r.suppressed_by == nil or r.suppressed_by == M.null) and r.baseline ~= "known" or false
end

-- Number of leak records that fail the run (M.fails), and of unsuppressed errors.
function M.failing(report, kinds)
   local n = 0
   for _, leak in ipairs(report.leaks or {}) do
      if M.fails(leak, kinds) then n = n + 1 end
   end
   for _, g in ipairs(report.growth or {}) do  -- `ljleak soak`'s growing sites
      if M.fails(g, kinds) then n = n + 1 end
   end
   for _, e in ipairs(report.errors or {}) do  -- errors always fail the run
      if e.suppressed_by == nil or e.suppressed_by == M.null then n = n + 1 end
   end
   return n
end

-- Is record R suppressed?
function M.is_suppressed(r)
   return r.suppressed_by ~= nil and r.suppressed_by ~= M.null
end

return M
