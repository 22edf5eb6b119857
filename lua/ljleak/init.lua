-- ljleak's Lua API for the program under test: `local ljleak = require "ljleak"`. Tags, snapshots
-- and mid-run leak checks through the preloaded tracker (libljleak.so); loading it also wraps
-- ffi.gc (ljleak.registry), or re-runs `luajit -lljleak` under `ljleak run` (ljleak.reexec).
local M = {}

local vm = require "ljleak.vm"

-- Everything a check needs is loaded now, through the require captured at start-up: a check
-- made inside a test (whose spec may mock require, or insulate modules) loads nothing.
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

local function set_ctx()
   if M.active() then C.ljleak_ctx_set(C.ljleak_ctx_make(ctx.epoch, ctx.tag, nil)) end
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
local symbolizer = symbolize.new({})   -- one for the process: libdw's tables are read once

local function records_tracked(report, lo, hi)
   local proc = assert(raw.parse(vm.raw_text(report(lo, hi, vm.raw_out)), "check"))
   return model.build({proc}, {engine = "tracker", symbolizer = symbolizer}).leaks
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
local function quick(epoch, hi)
   local live = tonumber(C.ljleak_live_addrs(epoch, hi, live_out, LIVE_CAP))
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

--- Like check, for what was allocated since SNAPSHOT (and up to now).
function M.check_since(snapshot)
   need_tracker("check_since")
   local hi = next_epoch()
   local recs = {}
   if not nothing_lost(snapshot.epoch, hi) then
      collect()
      collect()
      registry.self_references(snapshot.epoch)
      recs = records(C.ljleak_check, snapshot.epoch, hi)
   end
   return recs, registry.problems_since(snapshot.epoch)
end

--- A readable report of check's results (as `ljleak run` prints them).
function M.format(recs, probs)
   local out = text.render({leaks = recs, summary = model.summarize(recs)}, {brief = true})
   for _, p in ipairs(probs or {}) do out = out .. p.kind .. ": " .. p.message .. "\n" end
   return out
end

-- -- Loading --------------------------------------------------------------------------------------

if M.active() then
   registry.install(ctx)
else
   vm.require("ljleak.reexec").if_asked()
end

return M
