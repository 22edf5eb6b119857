-- ljleak's Lua API for the program under test: `local ljleak = require "ljleak"`. Tags, snapshots
-- and mid-run leak checks through the preloaded tracker (libljleak.so); loading it also wraps
-- ffi.gc (ljleak.registry), or re-runs `luajit -lljleak` under `ljleak run` (ljleak.reexec).
local M = {}

local vm = require "ljleak.vm"

-- Interpreted, every function of this module: tags, snapshots and checks run a few times a test
-- or an iteration, with C calls and pcalls a trace cannot keep (busted's per-test hooks cost a
-- third less so). The ffi.gc wrapper (ljleak.registry), called in the program's loops, is
-- compiled as before.
if jit then jit.off(true, true) end

-- Everything a check needs is loaded now, through the require captured at start-up: a check
-- made inside a test (whose spec may mock require, or insulate modules) loads nothing but, the
-- first time it has records, ljleak.core (through that require too).
local growth = vm.require "ljleak.growth"
local model = vm.require "ljleak.model"
local raw = vm.require "ljleak.raw"
local registry = vm.require "ljleak.registry"
local symbolize = vm.require "ljleak.symbolize"
local text = vm.require "ljleak.text"

local C = vm.ffi.C
local collect, pcall_, error_ = collectgarbage, pcall, error

--- Whether allocations are being tracked (the program runs under `ljleak run`, or with the
--- tracker preloaded).
M.active = vm.active

local function need_tracker(what)
   if not M.active() then
      error(("ljleak.%s: the tracker is not loaded (run under `ljleak run`, or `luajit -lljleak`)")
         :format(what), 3)
   end
end

--- Whether allocations get Lua frames (the tracker recognised this LuaJIT).
M.lua_frames = vm.lua_frames

function M.pid()
   return C.getpid()
end

-- -- Contexts: tags and snapshot epochs ---------------------------------------------------------

local ctx = {epoch = 0, tag = nil}   -- shared with the registry

-- The tracker's context calls, looked up once (a busted test makes two context changes).
local ctx_make, ctx_set
local function set_ctx()
   if not ctx_make then
      if not M.active() then return end
      ctx_make, ctx_set = C.ljleak_ctx_make, C.ljleak_ctx_set
   end
   ctx_set(ctx_make(ctx.epoch, ctx.tag, nil))
end

--- Blocks allocated from now on carry NAME (nil: no tag); reports group by tag. Returns the
--- previous tag.
function M.tag(name)
   assert(name == nil or type(name) == "string", "ljleak.tag: name must be a string or nil")
   local old = ctx.tag
   ctx.tag = name
   set_ctx()
   return old
end

--- Runs fn(...) with blocks tagged NAME, then restores the previous tag. Returns fn's results.
function M.scope(name, fn, ...)
   assert(type(fn) == "function", "ljleak.scope: fn must be a function")
   local old = M.tag(name)
   local res = {pcall(fn, ...)}
   M.tag(old)
   if not res[1] then error(res[2], 0) end
   return unpack(res, 2)
end

-- A new epoch: blocks allocated from now on can be told apart from older ones.
local function next_epoch()
   ctx.epoch = ctx.epoch + 1
   set_ctx()
   return ctx.epoch
end

-- -- Records made in this process ----------------------------------------------------------------

-- The leak records of a raw report the tracker made in this process (REPORT: ljleak_live or
-- ljleak_check, with the epochs LO, HI), shaped like the JSON report's. What this allocates
-- (libdw's symbol tables...) is ljleak's, not the program's: not tracked.
-- One symbolizer for the process (libdw's tables are read once), made for the first report that
-- has records: ljleak.core (libdw, libelf, libz, libbz2: 0.6 ms and 0.5 MiB) is loaded then,
-- through the require captured at start-up, not by every program that loads the API.
local symbolizer, no_sites = nil, symbolize.new({core = false})

local function records_tracked(report, lo, hi)
   local proc = assert(raw.parse(vm.raw_text(report(lo, hi, vm.raw_out)), "check"))
   if not symbolizer and next(proc.sites) ~= nil then
      local ok, core = pcall_(vm.require, "ljleak.core")
      symbolizer = symbolize.new({core = ok and core or false})
   end
   return model.build({proc}, {engine = "tracker", symbolizer = symbolizer or no_sites}).leaks
end

local function records(report, lo, hi)
   C.ljleak_pause(1)
   local ok, res = pcall_(records_tracked, report, lo, hi)
   C.ljleak_pause(0)
   if not ok then error_(res, 0) end
   return res
end

-- -- Snapshots ------------------------------------------------------------------------------------

local Snapshot = {}
Snapshot.__index = Snapshot

--- A checkpoint: blocks allocated after it can be listed later with s:diff(other).
function M.snapshot()
   need_tracker("snapshot")
   return setmetatable({epoch = next_epoch()}, Snapshot)
end

--- Blocks born between this snapshot and OTHER (a later snapshot; default: now) that are still
--- live, grouped by stack: records {kind = "live", blocks, bytes, frames, lua, test}, biggest
--- first, with totals `blocks` and `bytes`.
function Snapshot:diff(other)
   local hi = other and other.epoch or next_epoch()
   local recs = records(C.ljleak_live, self.epoch, hi)
   table.sort(recs, function(a, b) return a.bytes > b.bytes end)
   local blocks, bytes = 0, 0
   for _, r in ipairs(recs) do blocks, bytes = blocks + r.blocks, bytes + r.bytes end
   recs.blocks, recs.bytes = blocks, bytes
   return recs
end

-- -- The ffi.gc registry's findings ----------------------------------------------------------------

--- Problems seen by the ffi.gc registry so far (bad frees, double finalizers, finalizer errors),
--- each {kind, message, lua = {where}}.
M.problems = registry.problems

--- Resources registered with ffi.gc since SNAPSHOT (default: ever) whose finalizer has not run,
--- after a full collection: each {ctype, address, lua = {where}}. Still alive is not a leak (a
--- cache, a fixture): this is information, never a failure by itself.
function M.retained(snapshot, collected)
   return registry.retained(snapshot and snapshot.epoch or 0, collected)
end

-- -- Checks ------------------------------------------------------------------------------------------

--- Runs fn(...), collects garbage fully, and returns the leak records (definite, indirect,
--- possible) of the blocks allocated during fn that are now lost, while the Lua state is still
--- open: a pointer held by a live cdata counts, one left in a freed Lua object does not.
--- Second result: registry problems during fn, including resources retained after collection.
function M.check(fn, ...)
   need_tracker("check")
   assert(type(fn) == "function", "ljleak.check: fn must be a function")
   local s = M.snapshot()
   local ok, err = pcall_(fn, ...)
   if not ok then
      next_epoch()
      error(err, 0)
   end
   return M.check_since(s)
end

local LIVE_CAP = 64
local live_out = vm.ffi.new("uintptr_t[?]", LIVE_CAP)
local fill = vm.ffi.fill

-- Can nothing born since EPOCH (up to HI) be lost, without collecting: nothing is live nor
-- registered with ffi.gc; or what is live is memory that ffi.gc frees with its cdata (registry);
-- or, after a scan of the C side's own roots (data, stacks: ljleak_unheld), what they do not
-- hold is such memory. A busted test, usually: a full collection and scan cost milliseconds, and
-- grow with the suite's heap.
local live_addrs   -- C.ljleak_live_addrs, looked up once
local function quick(epoch, hi)
   live_addrs = live_addrs or C.ljleak_live_addrs
   local live = tonumber(live_addrs(epoch, hi, live_out, LIVE_CAP))
   if live == 0 and not registry.registered_since(epoch) then return true end
   if live <= LIVE_CAP and registry.freed_with_their_cdata(epoch, live_out, live) then return true end
   live = tonumber(C.ljleak_unheld(epoch, hi, live_out, LIVE_CAP))
   return live <= LIVE_CAP and registry.freed_with_their_cdata(epoch, live_out, live)
end

local function nothing_lost(epoch, hi)
   local yes = quick(epoch, hi)
   fill(live_out, LIVE_CAP * 8)   -- no copy of a block's address left for a full check to find
   return yes
end

-- The leak records of the blocks born in epochs [EPOCH, HI), and the registry's problems since.
local function check_epochs(epoch, hi)
   local recs = {}
   if not nothing_lost(epoch, hi) then
      collect()
      collect()
      registry.self_references(epoch)
      recs = records(C.ljleak_check, epoch, hi)
   end
   return recs, registry.problems_since(epoch)
end

--- Like check, for what was allocated since SNAPSHOT (and up to now).
function M.check_since(snapshot)
   need_tracker("check_since")
   return check_epochs(snapshot.epoch, next_epoch())
end

-- For ljleak.busted, a context change at each edge of a test: begin(name) tags what follows NAME
-- in a new epoch (returns the tag before it, and that epoch); finish(old) gives the tag OLD back in
-- a new epoch (returns it); check(epoch, hi) is check_since for the epochs [EPOCH, HI).
M.context = {
   begin = function(name)
      local old = ctx.tag
      ctx.tag, ctx.epoch = name, ctx.epoch + 1
      set_ctx()
      return old, ctx.epoch
   end,
   finish = function(old)
      ctx.tag = old
      return next_epoch()
   end,
   check = check_epochs,
}

--- A readable report of check's results (as `ljleak run` prints them).
function M.format(recs, probs)
   local out = text.render({leaks = recs, summary = model.summarize(recs)}, {brief = true})
   for _, p in ipairs(probs or {}) do out = out .. p.kind .. ": " .. p.message .. "\n" end
   return out
end

-- -- Growth --------------------------------------------------------------------------------------
-- ljleak.stable: an epoch per iteration (the generation of each block), the live blocks counted
-- per site by the tracker after each iteration and a full collection (ljleak_site_live: no report),
-- the sites summed by stack (a site is a stack in one epoch), each stack's series judged by
-- ljleak.growth; the growing stacks reported once at the end, as records.

local counts = {cap = 0}   -- the tracker's answer: ljleak_live_count[cap], grown when too small

local function site_counts(lo, hi)
   while true do
      if counts.cap == 0 then
         counts.cap = 1024
         counts.buf = vm.ffi.new("ljleak_live_count[?]", counts.cap)
      end
      local n = C.ljleak_site_live(lo, hi, counts.buf, counts.cap)
      if n >= 0 then return counts.buf, n end
      counts.cap = counts.cap * 2
      counts.buf = vm.ffi.new("ljleak_live_count[?]", counts.cap)
   end
end

local memstat = vm.ffi.new("uint64_t[5]")
local MEM_FIELDS = {"rss", "arena", "hblkhd", "uordblks", "fordblks"}

-- The live-block records of the SITES (ids) given: one record per stack.
local function site_records(sites)
   local ids = vm.ffi.new("uint32_t[?]", #sites, sites)
   return records(function(_, _, out) return C.ljleak_live_sites(ids, #sites, out) end, 0, 0)
end

function M.stable_options(opts)
   assert(opts == nil or type(opts) == "table", "ljleak.stable: opts must be a table")
   opts = opts or {}
   local n, w = opts.iterations or 200, opts.warmup
   assert(type(n) == "number" and n >= 16 and n % 1 == 0, "ljleak.stable: iterations must be an integer >= 16")
   w = w or math.floor(n / 10)
   assert(type(w) == "number" and w >= 0 and w % 1 == 0 and n - w >= 8,
      "ljleak.stable: warmup must be an integer >= 0, with at least 8 iterations after it")
   return n, w
end

-- A series of samples: iteration i's allocations are in an epoch of their own; sample(i), after
-- the iteration, collects garbage fully and counts the live blocks per stack and the memory.
local Series = {}
Series.__index = Series

function M.series(warmup)
   need_tracker("series")
   local s = setmetatable({warmup = warmup, stacks = {}, order = {}, mem = {live = {}}, n = 0}, Series)
   for _, f in ipairs(MEM_FIELDS) do s.mem[f] = {} end
   s.lo = next_epoch()
   return s
end

function Series:sample(i)
   local e = ctx.epoch
   collect()
   collect()
   local buf, k = site_counts(self.lo, e + 1)
   local live = 0
   for j = 0, k - 1 do
      local c = buf[j]
      local key = tostring(c.stack)
      local st = self.stacks[key]
      if not st then
         st = {blocks = {}, bytes = {}, sites = {}, born = 0, ids = {}, key = key}
         self.stacks[key] = st
         self.order[#self.order + 1] = key
      end
      local b, y = tonumber(c.blocks), tonumber(c.bytes)
      st.blocks[i] = (st.blocks[i] or 0) + b
      st.bytes[i] = (st.bytes[i] or 0) + y
      if not st.sites[c.site] then
         st.sites[c.site] = true
         st.ids[#st.ids + 1] = c.site
      end
      if c.epoch == e and i > self.warmup then st.born = st.born + b end
      live = live + y
   end
   self.mem.live[i] = live
   C.ljleak_memstat(memstat)
   for m, f in ipairs(MEM_FIELDS) do self.mem[f][i] = tonumber(memstat[m - 1]) end
   self.n = i
   next_epoch()
end

-- The verdict after the samples: true, {}, memory; or false, sites, memory (as ljleak.stable's).
function Series:finish()
   local hi = next_epoch()
   local n, warmup = self.n, self.warmup
   local grown = {}
   for _, key in ipairs(self.order) do
      local st = self.stacks[key]
      for i = 1, n do
         st.blocks[i], st.bytes[i] = st.blocks[i] or 0, st.bytes[i] or 0
      end
      local g = growth.judge(st.blocks, st.bytes, warmup)
      if g then
         g.stack = st
         grown[#grown + 1] = g
      end
   end
   local mem = self.mem
   mem.allocator = growth.memory(mem, warmup, #grown > 0)
   if #grown == 0 then return true, {}, mem end
   -- Blocks born after warmup still live now, per epoch: the persistent part of each generation.
   local buf, k = site_counts(self.lo + warmup, hi)
   local persistent = {}
   for j = 0, k - 1 do
      local key = tostring(buf[j].stack)
      persistent[key] = (persistent[key] or 0) + tonumber(buf[j].blocks)
   end
   local sites = {}
   for _, g in ipairs(grown) do
      local rec = site_records(g.stack.ids)[1]
      if rec then
         local p = persistent[g.stack.key] or 0
         rec.blocks_per_iteration, rec.bytes_per_iteration, rec.fit =
            g.blocks_per_iteration, g.bytes_per_iteration, g.fit
         rec.generations = {persistent = p / (n - warmup), released = math.max(0, g.stack.born - p) / (n - warmup)}
         rec.series = g.stack.bytes   -- live bytes after each iteration
         sites[#sites + 1] = rec
      end
   end
   table.sort(sites, function(a, b) return a.bytes_per_iteration > b.bytes_per_iteration end)
   return #sites == 0, sites, mem
end

--- Runs fn(i) for i = 1..N (opts.iterations, 200), each followed by a full collection and a count
--- of the live blocks per allocation site; after opts.warmup iterations (N/10) a site whose live
--- bytes keep growing is a growth. Returns true, {}, memory when nothing grows, else false, sites,
--- memory: each site a live record (frames, lua) with blocks_per_iteration,
--- bytes_per_iteration, fit (R^2), generations {persistent, released} (blocks per iteration born
--- then and still live at the end, or live after their iteration and freed later), series (its
--- live bytes after each iteration); memory: the
--- series {live, rss, arena, hblkhd, uordblks, fordblks} and `allocator` when RSS grew while
--- live bytes did not (ljleak.growth.memory: verdict, message).
function M.stable(fn, opts)
   need_tracker("stable")
   assert(type(fn) == "function", "ljleak.stable: fn must be a function")
   local n, warmup = M.stable_options(opts)
   local jit_was_on = jit and jit.status()
   if jit_was_on then jit.off() jit.flush() end   -- exact Lua lines: no trace stands for them
   local series = M.series(warmup)
   local ok, err = true, nil
   for i = 1, n do
      ok, err = pcall_(fn, i)
      if not ok then break end
      series:sample(i)
   end
   if jit_was_on then jit.on() end
   if not ok then
      next_epoch()
      error(err, 0)
   end
   return series:finish()
end

--- A readable report of stable's growing sites, and of its memory verdict (the third result).
function M.format_growth(sites, memory)
   local out = {}
   for _, g in ipairs(sites) do out[#out + 1] = text.growth_text(g) end
   if memory and memory.allocator then out[#out + 1] = memory.allocator.message .. "\n" end
   return table.concat(out, "\n")
end

-- -- Loading --------------------------------------------------------------------------------------

if M.active() then
   registry.install(ctx)
else
   vm.require("ljleak.reexec").if_asked()
end

return M
