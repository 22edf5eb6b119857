-- The ffi.gc resource registry, in the program under test: while the ljleak module is loaded,
-- ffi.gc is wrapped, each finalizer's resource recorded until the finalizer runs, and misuse
-- reported (a double finalizer, a finalizer that raises or frees what malloc never gave, one
-- that keeps its own cdata alive). Its problems also go to LJLEAK_DIR/lua.PID.jsonl.
local ffi = require "ffi"

local vm = require "ljleak.vm"

-- Loaded now, through the require captured at start-up (a spec may mock require).
local json = vm.require "ljleak.json"
local ENV = vm.require("ljleak.const").ENV
local model = vm.require "ljleak.model"
local raw = vm.require "ljleak.raw"

local M = {}

local C = vm.ffi.C
local typeof, cast, new, orig_gc = vm.ffi.typeof, vm.ffi.cast, vm.ffi.new, vm.ffi.gc
local getinfo, getupvalue, getenv = vm.getinfo, vm.getupvalue, vm.getenv
local io_open, collect, pcall_, error_, type_, rawequal_, next_ = io.open, collectgarbage, pcall, error, type,
   rawequal, next

-- The API's current context: {epoch = N, tag = name or nil} (ljleak's init sets it).
local ctx = {epoch = 0}

-- Where Lua code is: {source, line, function} of the caller's caller.
local function where(level)
   local info = getinfo(level + 1, "Sln")
   if not info then return nil end
   return {source = info.short_src, line = info.currentline, ["function"] = info.name}
end

local function where_text(w)
   return w and ("%s:%d"):format(w.source, w.line) or "?"
end

-- The Lua frames of an interned Lua stack (the tracker's, from ljleak_here), innermost first.
local function stack_frames(id)
   if not id or id == 0 then return {} end
   local proc = assert(raw.parse(vm.raw_text(C.ljleak_lua_raw(id, vm.raw_out)), "Lua stack"))
   return proc.lua[id] or {}
end

-- -- The registry ------------------------------------------------------------------------------
-- While ljleak is loaded, ffi.gc is wrapped: each finalizer's resource is recorded (address,
-- ctype, finalizer, where) until the finalizer runs, and misuse is reported. The wrapper stays
-- JIT-compilable: no closure per call, and "where" is the tracker's interned Lua stack (exact
-- in the interpreter, the trace's start in compiled code), turned into text only for a report.

-- A registration has a slot, a small integer: arrays indexed by it hold its record, and only
-- finding it takes a look-up by address (a number key, which LuaJIT hashes on a slow path: five
-- tables keyed by address made a dozen such look-ups a registration).
local slot_of = {}                                -- address -> slot
local reg_addr = {}                               -- slot -> address (nil: free)
local reg_cd = setmetatable({}, {__mode = "v"})   -- slot -> the cdata registered (weak)
local reg_fin, reg_where, reg_epoch = {}, {}, {}  -- slot -> finalizer, Lua stack, epoch
local reg_reported = {}  -- slot -> true: its self-reference was reported by a check
local free_slots, nfree, nslots = {}, 0, 0   -- slots given back, to take again; slots ever made
local reg_dups = {}   -- address -> {{finalizer, where}...}: more finalizers for a taken address

local function new_slot(addr)
   local s
   if nfree > 0 then
      s, nfree = free_slots[nfree], nfree - 1
   else
      nslots = nslots + 1
      s = nslots
   end
   reg_addr[s], slot_of[addr] = addr, s
   return s
end

local function drop_slot(s)
   slot_of[reg_addr[s]] = nil
   reg_addr[s], reg_cd[s], reg_fin[s], reg_where[s], reg_epoch[s], reg_reported[s] = nil, nil, nil, nil, nil, nil
   nfree = nfree + 1
   free_slots[nfree] = s
end

local problems = {}                               -- {kind, message, lua, ...}

-- ffi.C.free once the program has declared it (nil before).
local c_free
local function get_free() return C.free end
local function the_free()
   if c_free == nil then
      local ok, f = pcall_(get_free)
      if ok then c_free = f end
   end
   return c_free
end

-- How many registrations of each epoch are pending (not finalized nor detached), and how many of
-- those have a finalizer that is not ffi.C.free: a check looks at its own epochs, not at every
-- registration ever made (a busted suite makes one an epoch, and collects rarely).
local pending, unfreeing = {}, {}

local function count(s, d)
   local e = reg_epoch[s]
   if not e then return end
   local n = (pending[e] or 0) + d
   pending[e] = n ~= 0 and n or nil
   local free = the_free()
   if free == nil or not rawequal_(reg_fin[s], free) then
      n = (unfreeing[e] or 0) + d
      unfreeing[e] = n ~= 0 and n or nil
   end
end

-- The sum of T's counts (epoch -> count) for EPOCH and later ones.
local function sum_since(t, epoch)
   local n = 0
   if ctx.epoch - epoch <= 64 then
      for e = epoch, ctx.epoch do n = n + (t[e] or 0) end
   else
      for e, k in next_, t do
         if e >= epoch then n = n + k end
      end
   end
   return n
end

-- Lua frames of an interned Lua stack, without the test machinery's.
local function lua_frames(id)
   return model.user_frames(stack_frames(id))
end

local function frames_text(frames)
   local f = frames[1]
   if not f then return "?" end
   return ("%s:%s%s"):format(f.source, f.line or "?", f.approximate and " (start of a JIT trace)" or "")
end

-- Each problem is also appended to LJLEAK_DIR/lua.PID.jsonl at once, for `ljleak run`'s report:
-- finalizers run until the very end of lua_close.
local function problem(kind, message, frames, extra)
   local p = {kind = kind, message = message, lua = frames or {}, pid = C.getpid(), test = ctx.tag}
   for k, v in pairs(extra or {}) do p[k] = v end
   p.epoch = ctx.epoch  -- in this process only: which check it belongs to
   problems[#problems + 1] = p
   local dir = getenv(ENV.DIR)
   if dir then
      local f = io_open(("%s/lua.%d.jsonl"):format(dir, C.getpid()), "ab")
      if f then
         local line = {}
         for k, v in pairs(p) do line[k] = v end
         line.epoch = nil
         line.lua = json.array(p.lua)
         f:write((json.encode(line):gsub("\n%s*", " ")), "\n")
         f:close()
      end
   end
   return p
end

-- The address a cdata stands for (pointers, arrays), or nil (structs, numbers). Whether a
-- ctype converts is learnt once per ctype id: no closure per call, so this stays compiled.
local convertible = {}
local uintptr_t = typeof("uintptr_t")   -- a ctype, not a name the interpreter parses at every cast
local function to_uintptr(cd) return tonumber(cast(uintptr_t, cd)) end

local function address_of(cd)
   local id = tonumber(typeof(cd))
   local ok = convertible[id]
   if ok == nil then
      ok = pcall_(to_uintptr, cd)
      convertible[id] = ok
   end
   if not ok then return nil end
   local addr = tonumber(cast(uintptr_t, cd))
   return addr ~= 0 and addr or nil
end

-- Does finalizer FIN keep its own cdata CD alive (an upvalue, or a value or key of a table
-- upvalue)? Then CD can never be collected before lua_close (LuaJIT issue 896).
local function holds_itself(fin, cd)
   if type_(fin) ~= "function" then return false end
   for i = 1, 255 do
      local name, v = getupvalue(fin, i)
      if not name then return false end
      if rawequal_(v, cd) then return true end
      if type_(v) == "table" then
         for k, x in next_, v do
            if rawequal_(x, cd) or rawequal_(k, cd) then return true end
         end
      end
   end
   return false
end

local function self_reference(cd, at, when)
   local frames = lua_frames(at)
   problem("finalizer_self_reference", ("the ffi.gc finalizer registered at %s keeps its own cdata (%s) alive "
      .. "through an upvalue, so it %s (LuaJIT issue 896): let the finalizer take the cdata as its argument")
      :format(frames_text(frames), tostring(typeof(cd)), when), frames)
end

local bad = new("uintptr_t[16]")

-- The one finalizer every registered cdata gets: runs the user's, watching what it frees.
local function dispatch(c)
   local addr = tonumber(cast(uintptr_t, c))
   local s = slot_of[addr]
   local fin, at, reported
   if s then fin, at, reported = reg_fin[s], reg_where[s], reg_reported[s] end
   if fin then
      count(s, -1)
      drop_slot(s)
      -- Only lua_close finalizes a cdata its own finalizer holds: say so, once.
      if not reported and holds_itself(fin, c) then self_reference(c, at, "was only freed by lua_close") end
   else  -- a second finalizer for this address (the registered cdata cannot be told apart now)
      local dups = reg_dups[addr]
      local d = dups and table.remove(dups)
      if dups and #dups == 0 then reg_dups[addr] = nil end
      if not d then return end
      fin, at = d[1], d[2]
   end
   C.ljleak_finalizer_enter()
   local ok, err = pcall_(fin, c)
   local nbad = C.ljleak_finalizer_leave(bad, 16)
   if nbad > 0 or not ok then
      local frames = lua_frames(at)
      for i = 0, math.min(nbad, 16) - 1 do
         problem("bad_free", ("the ffi.gc finalizer registered at %s freed 0x%x, which the tracker "
            .. "never handed out or had already taken back (double free); the free was not passed on")
            :format(frames_text(frames), tonumber(bad[i])), frames, {address = tonumber(bad[i])})
      end
      if not ok then
         problem("finalizer_error", ("the ffi.gc finalizer registered at %s raised: %s")
            :format(frames_text(frames), tostring(err)), frames)
         error_(err, 0)
      end
   end
end

local function gc_wrapper(cd, finalizer)
   local addr = address_of(cd)
   if not addr then return orig_gc(cd, finalizer) end
   local s = slot_of[addr]
   local old = s and reg_cd[s]
   if finalizer == nil then
      if s and (old == nil or rawequal(old, cd)) then
         count(s, -1)
         drop_slot(s)
         local w = where(2)
         C.ljleak_annotate(cast("void *", cd),
            ("ffi.gc finalizer detached at %s by ffi.gc(cd, nil)"):format(where_text(w)))
      end
      return orig_gc(cd, nil)
   end
   if s and old ~= nil and not rawequal(old, cd) then  -- == compares addresses
      local w = where(2)
      local first = lua_frames(reg_where[s])
      problem("double_finalizer", ("two ffi.gc finalizers for the same address 0x%x (%s), "
         .. "registered at %s and at %s: a double free waiting to happen"):format(
         addr, tostring(typeof(old)), frames_text(first), where_text(w)), {w})
      reg_dups[addr] = reg_dups[addr] or {}
      table.insert(reg_dups[addr], {finalizer, C.ljleak_here()})
      return orig_gc(cd, dispatch)
   end
   if s then count(s, -1) else s = new_slot(addr) end  -- the same cdata again: its new finalizer counts
   reg_cd[s], reg_fin[s], reg_where[s], reg_epoch[s] = cd, finalizer, C.ljleak_here(), ctx.epoch
   count(s, 1)
   return orig_gc(cd, dispatch)
end

--- Problems seen by the ffi.gc registry so far (bad frees, double finalizers, finalizer errors),
--- each {kind, message, lua = {where}}.
function M.problems()
   return problems
end

--- Resources registered with ffi.gc since SNAPSHOT (default: ever) whose finalizer has not run,
--- after a full collection: each {ctype, address, lua = {where}}. Still alive is not a leak (a
--- cache, a fixture): this is information, never a failure by itself.
function M.retained(lo, collected)
   if not collected then
      collect()
      collect()
   end
   local out = {}
   for s in pairs(reg_fin) do
      if reg_epoch[s] >= lo and reg_cd[s] ~= nil then
         local addr = reg_addr[s]
         local frames = lua_frames(reg_where[s])
         local ctype = tostring(typeof(reg_cd[s]))
         out[#out + 1] = {kind = "retained", ctype = ctype, address = addr, lua = frames,
                       message = ("%s at 0x%x, registered with ffi.gc at %s, is still alive after a full "
                         .. "collection"):format(ctype, addr, frames_text(frames))}
      end
   end
   table.sort(out, function(a, b) return a.address < b.address end)
   return out
end

-- Registered cdata born since EPOCH that are still alive after a collection because their own
-- finalizer holds them: reported once each, as errors.
function M.self_references(lo)
   for s, fin in pairs(reg_fin) do
      local cd = reg_cd[s]
      if cd ~= nil and not reg_reported[s] and reg_epoch[s] >= lo and holds_itself(fin, cd) then
         reg_reported[s] = true
         self_reference(cd, reg_where[s], "is never collected while the Lua state lives")
      end
   end
end


-- Is anything registered since EPOCH still registered?
function M.registered_since(epoch)
   return sum_since(pending, epoch) > 0
end

-- Can none of the N blocks at ADDRS (a uintptr_t array: blocks born since EPOCH) be lost, and
-- would a collection run no finalizer registered since EPOCH that could go wrong? Yes when each
-- belongs to a cdata that ffi.gc gave ffi.C.free as its finalizer, and the resources registered
-- since EPOCH and not finalized yet are exactly those: such a block is freed with its cdata, or
-- its cdata is alive and holds it; C.free holds nothing (no finalizer keeping its own cdata), and
-- frees a live block. A busted test that ends with ffi.gc'd memory not collected yet then needs
-- no collection and no scan.
function M.freed_with_their_cdata(epoch, addrs, n)
   local free = the_free()
   if sum_since(unfreeing, epoch) > 0 then return false end
   -- ffi.C.free not declared: no registration counts as freeing, so none is pending now (the
   -- sum above); then only no block at all can do.
   if free == nil then return n == 0 end
   local mine = 0
   for i = 0, n - 1 do
      local s = slot_of[tonumber(addrs[i])]
      if not s or not rawequal_(reg_fin[s], free) then return false end
      if reg_epoch[s] >= epoch then mine = mine + 1 end
   end
   return mine == sum_since(pending, epoch)
end

-- Problems seen since EPOCH.
function M.problems_since(epoch)
   local out = {}
   for _, p in ipairs(problems) do
      if p.epoch >= epoch then out[#out + 1] = p end
   end
   return out
end

-- Wrap ffi.gc (unless LJLEAK_REGISTRY=0). CONTEXT: the API's {epoch, tag}, kept up to date by it.
function M.install(context)
   ctx = context
   if getenv(ENV.REGISTRY) ~= "0" then ffi.gc = gc_wrapper end
end

-- The checks' side runs interpreted, as ljleak's API does (the wrapper and the finalizer
-- dispatch stay compiled: they run in the program's loops).
if jit then
   for _, f in ipairs {sum_since, M.retained, M.self_references, M.registered_since, M.freed_with_their_cdata,
                       M.problems_since} do
      jit.off(f, true)
   end
end

return M
