-- The leak-record model (JSON schema 1, shared/DESIGN.md): records built from processes (the one
-- proc shape of ljleak.raw), merged and ordered, counted by kind, and judged against --fail-on.
local bit = require "bit"
local table_new = require "table.new"

local const = require "ljleak.const"
local json = require "ljleak.json"
local symbolize = require "ljleak.symbolize"

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

-- The numbering of REPORT's frame lists and Lua frame lists (made by M.build, or new ones), with
-- the helpers the text report groups records by again.
function M.numbering(report)
   return numbering_of[report] or {frames = lists(frame_text), lua = lists(lua_frame_key)}
end
M.sub, M.pair, M.sort_by, M.frame_text = sub, pair, sort_by, frame_text

-- LEAKS in report order: by pid, kind, size (biggest first), frames, Lua frames, test and note.
-- IDS[record]: pair(its frame list's number, its Lua frame list's number) in NUMBERING.
function M.order(leaks, ids, numbering)
   local frame_rank, lua_rank = numbering.frames:ranks(), numbering.lua:ranks()
   return sort_by(leaks, {
      function(r) return r.pid or 0 end,
      function(r) return kind_rank[r.kind] or 9 end,   -- (a snapshot's records: "live")
      function(r) return -r.bytes end,
      function(r) return frame_rank[math.floor(ids[r] / 2^26)] end,
      function(r) return lua_rank[ids[r] % 2^26] end,
      function(r) return r.test or "" end,
      function(r) return r.note or "" end,
   })
end

-- Records merged as they are added: those of one process, kind, test, note, suppression and
-- stack (frames and Lua frames, numbered by NUMBERING) are one, their blocks and bytes added up.
-- merger:add(pid, kind, test, note, suppressed_by, frames, lua, blocks, bytes, make) adds to the
-- record of that key, or makes it with MAKE() (a record with those blocks and bytes);
-- merger:records() gives them in report order (M.order).
local Merger = {}
Merger.__index = Merger

function M.merger(numbering)
   return setmetatable({numbering = numbering, by_key = {}, leaks = {}, ids = {}}, Merger)
end

function Merger:add(pid, kind, test, note, suppressed_by, frames, lua, blocks, bytes, make)
   local id = pair(self.numbering.frames:id(frames), self.numbering.lua:id(lua))
   local slot = sub(sub(sub(sub(sub(self.by_key, pid or false), kind), test or false), note or false),
                    suppressed_by or false)
   local rec = slot[id]
   if rec then
      rec.blocks, rec.bytes = rec.blocks + blocks, rec.bytes + bytes
   else
      rec = make()
      slot[id] = rec
      self.ids[rec] = id
      self.leaks[#self.leaks + 1] = rec
   end
   return rec
end

function Merger:records()
   return M.order(self.leaks, self.ids, self.numbering)
end

-- Is frame F in LuaJIT's VM (the luajit executable, or libluajit)?
function M.vm_frame(f)
   local obj = f.object
   return type(obj) == "string" and (obj:match("/luajit[^/]*$") or obj:match("libluajit")) ~= nil
end

-- -- Building records ------------------------------------------------------------------------

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
   local no_lua = {}
   local proc_errors = {}   -- the processes' own (Valgrind's): by pid, biggest count first
   for _, proc in ipairs(procs) do
      processes[#processes + 1] = {pid = proc.pid, ppid = proc.ppid, exe = proc.exe, lua_state = proc.lua_state,
                                   truncated = proc.truncated or nil, stats = proc.stats, checked = true,
                                   lua = proc.lua_vm and "unavailable: " .. proc.lua_vm or nil,
                                   unstopped_threads = proc.unstopped, command = proc.command,
                                   fatal_signal = proc.fatal_signal}
      for _, rec in ipairs(proc.errors or {}) do
         rec.pid = proc.pid
         proc_errors[#proc_errors + 1] = rec
      end
      for _, leak in ipairs(proc.leaks) do
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
         merger:add(proc.pid, leak.kind, test, note, nil, frames, lua, leak.blocks, leak.bytes, function()
            return {kind = leak.kind, blocks = leak.blocks, bytes = leak.bytes, pid = proc.pid,
                    frames = frames, lua = lua, test = test, note = note, suppressed_by = nil}
         end)
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
      summary = M.summarize(leaks), leaks = leaks, processes = processes, errors = errors,
   }
   numbering_of[report] = numbering
   return report
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
