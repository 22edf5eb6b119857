-- ljleak's Lua API for the program under test: `local ljleak = require "ljleak"`.
-- Talks to the preloaded tracker (libljleak.so) through the FFI: Lua frames for every
-- allocation, tags, snapshots, mid-run leak checks and the ffi.gc resource registry.
local ffi = require "ffi"

local M = {}

local vm = require "ljleak.vm"

-- Everything a check needs is loaded now, through the require captured at start-up: a check
-- made inside a test (whose spec may mock require, or insulate modules) loads nothing.
local report = vm.require "ljleak.report"
local symbolize = vm.require "ljleak.symbolize"

local C = vm.ffi.C
local typeof, cast, new, tostr, orig_gc = vm.ffi.typeof, vm.ffi.cast, vm.ffi.new, vm.ffi.string, vm.ffi.gc
local getinfo, getupvalue, getenv = vm.getinfo, vm.getupvalue, vm.getenv
local io_open, collect, pcall_, error_, type_, rawequal_, next_ = io.open, collectgarbage, pcall, error, type,
  rawequal, next
local KINDS = {[1] = "indirect", [2] = "possible", [3] = "reachable", [4] = "definite"}

--- Whether allocations are being tracked (the program runs under `ljleak run`, or with the
--- tracker preloaded).
M.active = vm.active

local function need_tracker(what)
  if not M.active() then
    error(("ljleak.%s: the tracker is not loaded (run under `ljleak run`, or `luajit -lljleak`)")
      :format(what), 3)
  end
end

-- Where Lua code is, for the registry: {source, line, function} of the caller's caller.
local function where(level)
  local info = getinfo(level + 1, "Sln")
  if not info then return nil end
  return {source = info.short_src, line = info.currentline, ["function"] = info.name}
end

local function where_text(w)
  return w and ("%s:%d"):format(w.source, w.line) or "?"
end

--- Whether allocations get Lua frames (the tracker recognised this LuaJIT).
M.lua_frames = vm.lua_frames

-- -- Contexts: tags and snapshot epochs ---------------------------------------------------------

local epoch, tag = 0, nil

local function set_ctx()
  if M.active() then C.ljleak_ctx_set(C.ljleak_ctx_make(epoch, tag, nil)) end
end

--- Blocks allocated from now on carry NAME (nil: no tag); reports group by tag. Returns the
--- previous tag.
function M.tag(name)
  assert(name == nil or type(name) == "string", "ljleak.tag: name must be a string or nil")
  local old = tag
  tag = name
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
  epoch = epoch + 1
  set_ctx()
  return epoch
end

-- -- Records made in this process ----------------------------------------------------------------

-- The Lua frames of an interned Lua stack (the tracker's), innermost first.
local stack_text = new("char[4096]")
local function stack_frames(id)
  if not id or id == 0 then return {} end
  local len = C.ljleak_lua_text(id, stack_text, 4096)
  local frames = {}
  for line, approx, name, src in tostr(stack_text, len):gmatch("(%-?%d+)\t(~?)\t([^\t]*)\t([^\n]*)\n") do
    line = tonumber(line)
    frames[#frames + 1] = {source = src, line = line >= 0 and line or nil,
                           ["function"] = name ~= "" and name ~= "?" and name or nil,
                           approximate = approx == "~" or nil}
  end
  return frames
end

-- Turn grouped tracker records into leak records shaped like the JSON report's. What this
-- allocates (libdw's symbol tables...) is ljleak's, not the program's: not tracked.
local build_records_tracked
local function build_records(recs, n, opts)
  C.ljleak_pause(1)
  local ok, res = pcall_(build_records_tracked, recs, n, opts)
  C.ljleak_pause(0)
  if not ok then error_(res, 0) end
  return res
end

local symbolizer = symbolize.new({})   -- one for the process: libdw's tables are read once

function build_records_tracked(recs, n, opts)
  local proc = {pid = M.pid(), modules = {}, sites = {}, leaks = {}, lua = {}, ctx = {}}
  local module_index = {}
  local info = new("ljleak_site_info")
  local bias = new("uintptr_t[1]")
  local note = new("const char *[1]")
  local ep = new("uint32_t[1]")
  for i = 0, n - 1 do
    local r = recs[i]
    local id = tonumber(r.site)
    if not proc.sites[id] and C.ljleak_site(id, info) ~= 0 then
      local frames = {}
      for k = 0, info.depth - 1 do
        local ip = info.ips[k]
        local path = C.ljleak_module_of(ip, bias)
        if path ~= nil then
          local p = tostr(path)
          local idx = module_index[p]
          if not idx then
            idx = #proc.modules + 1
            module_index[p] = idx
            proc.modules[idx] = {index = idx, bias = tonumber(bias[0]), path = p}
          end
          frames[#frames + 1] = {module = idx, offset = tonumber(ip - bias[0])}
        else
          frames[#frames + 1] = {address = tonumber(ip)}
        end
      end
      local site = {id = id, fn = tostr(info.fn), frames = frames}
      if info.lua ~= 0 then
        site.lua = info.lua
        proc.lua[info.lua] = stack_frames(info.lua)
      end
      if info.ctx ~= 0 then
        site.ctx = info.ctx
        local t = C.ljleak_ctx_tag(info.ctx, note, ep)
        proc.ctx[info.ctx] = {epoch = ep[0], tag = t ~= nil and tostr(t) or nil,
                              note = note[0] ~= nil and tostr(note[0]) or nil}
      end
      proc.sites[id] = site
    end
    proc.leaks[#proc.leaks + 1] = {kind = opts.kind or KINDS[tonumber(r.kind)], site = id,
                                   blocks = tonumber(r.blocks), bytes = tonumber(r.bytes)}
  end
  return report.build({proc}, {engine = "tracker", symbolizer = symbolizer}).leaks
end

-- Calls query(lo, hi, buf, cap) with a buffer big enough for all its groups.
local function grouped(query, lo, hi)
  local cap = 256
  while true do
    local buf = new("ljleak_rec[?]", cap)
    local n = query(lo, hi, buf, cap)
    if n <= cap then return buf, n end
    cap = n + 64
  end
end

function M.pid()
  return C.getpid()
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
  local buf, n = grouped(C.ljleak_live, self.epoch, hi)
  local recs = build_records(buf, n, {kind = "live"})
  table.sort(recs, function(a, b) return a.bytes > b.bytes end)
  local blocks, bytes = 0, 0
  for _, r in ipairs(recs) do blocks, bytes = blocks + r.blocks, bytes + r.bytes end
  recs.blocks, recs.bytes = blocks, bytes
  return recs
end

-- -- The ffi.gc registry ----------------------------------------------------------------------
-- While ljleak is loaded, ffi.gc is wrapped: each finalizer's resource is recorded (address,
-- ctype, finalizer, where) until the finalizer runs, and misuse is reported. The wrapper stays
-- JIT-compilable: no closure per call, and "where" is the tracker's interned Lua stack (exact
-- in the interpreter, the trace's start in compiled code), turned into text only for a report.

local reg_cd = setmetatable({}, {__mode = "v"})   -- address -> the cdata registered (weak)
local reg_fin, reg_where, reg_epoch = {}, {}, {}  -- address -> finalizer, Lua stack, epoch
local reg_dups = {}   -- address -> {{finalizer, where}...}: more finalizers for a taken address
local reg_reported = {}  -- address -> true: its self-reference was reported by a check
local problems = {}                               -- {kind, message, lua, ...}

-- Lua frames of an interned Lua stack, without the test machinery's.
local function lua_frames(id)
  return report.user_frames(stack_frames(id))
end

local function frames_text(frames)
  local f = frames[1]
  if not f then return "?" end
  return ("%s:%s%s"):format(f.source, f.line or "?", f.approximate and " (start of a JIT trace)" or "")
end

-- Each problem is also appended to LJLEAK_DIR/lua.PID.jsonl at once, for `ljleak run`'s report:
-- finalizers run until the very end of lua_close.
local function problem(kind, message, frames, extra)
  local p = {kind = kind, message = message, lua = frames or {}, pid = M.pid(), test = tag}
  for k, v in pairs(extra or {}) do p[k] = v end
  p.epoch = epoch  -- in this process only: which check it belongs to
  problems[#problems + 1] = p
  local dir = getenv("LJLEAK_DIR")
  if dir then
    local f = io_open(("%s/lua.%d.jsonl"):format(dir, M.pid()), "ab")
    if f then
      local line = {}
      for k, v in pairs(p) do line[k] = v end
      line.epoch = nil
      line.lua = report.array(p.lua)
      f:write((report.encode(line):gsub("\n%s*", " ")), "\n")
      f:close()
    end
  end
  return p
end

-- The address a cdata stands for (pointers, arrays), or nil (structs, numbers). Whether a
-- ctype converts is learnt once per ctype id: no closure per call, so this stays compiled.
local convertible = {}
local function to_uintptr(cd) return tonumber(cast("uintptr_t", cd)) end

local function address_of(cd)
  local id = tonumber(typeof(cd))
  local ok = convertible[id]
  if ok == nil then
    ok = pcall_(to_uintptr, cd)
    convertible[id] = ok
  end
  if not ok then return nil end
  local addr = tonumber(cast("uintptr_t", cd))
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
  local addr = tonumber(cast("uintptr_t", c))
  local fin, at = reg_fin[addr], reg_where[addr]
  local reported = reg_reported[addr]
  if fin then
    reg_fin[addr], reg_where[addr], reg_epoch[addr], reg_cd[addr], reg_reported[addr] = nil, nil, nil, nil, nil
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
  local old = reg_cd[addr]
  if finalizer == nil then
    if reg_fin[addr] and (old == nil or rawequal(old, cd)) then
      reg_fin[addr], reg_where[addr], reg_epoch[addr], reg_cd[addr] = nil, nil, nil, nil
      local w = where(2)
      C.ljleak_annotate(cast("void *", cd),
        ("ffi.gc finalizer detached at %s by ffi.gc(cd, nil)"):format(where_text(w)))
    end
    return orig_gc(cd, nil)
  end
  if old ~= nil and not rawequal(old, cd) and reg_fin[addr] then  -- == compares addresses
    local w = where(2)
    local first = lua_frames(reg_where[addr])
    problem("double_finalizer", ("two ffi.gc finalizers for the same address 0x%x (%s), "
      .. "registered at %s and at %s: a double free waiting to happen"):format(
      addr, tostring(typeof(old)), frames_text(first), where_text(w)), {w})
    reg_dups[addr] = reg_dups[addr] or {}
    table.insert(reg_dups[addr], {finalizer, C.ljleak_here()})
    return orig_gc(cd, dispatch)
  end
  reg_cd[addr], reg_fin[addr], reg_where[addr], reg_epoch[addr] = cd, finalizer, C.ljleak_here(), epoch
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
function M.retained(snapshot, collected)
  if not collected then
    collect()
    collect()
  end
  local lo = snapshot and snapshot.epoch or 0
  local out = {}
  for addr, fin in pairs(reg_fin) do
    if fin and reg_epoch[addr] >= lo and reg_cd[addr] ~= nil then
      local frames = lua_frames(reg_where[addr])
      local ctype = tostring(typeof(reg_cd[addr]))
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
local function self_references(lo)
  for addr, fin in pairs(reg_fin) do
    local cd = reg_cd[addr]
    if cd ~= nil and not reg_reported[addr] and reg_epoch[addr] >= lo and holds_itself(fin, cd) then
      reg_reported[addr] = true
      self_reference(cd, reg_where[addr], "is never collected while the Lua state lives")
    end
  end
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

--- Like check, for what was allocated since SNAPSHOT (and up to now).
function M.check_since(snapshot)
  need_tracker("check_since")
  local hi = next_epoch()
  -- Nothing born since the snapshot is still live, and nothing registered then is still
  -- registered: nothing can be lost, no need to collect and scan (a busted test, usually).
  local registered = false
  for _, e in pairs(reg_epoch) do
    if e >= snapshot.epoch then registered = true break end
  end
  local recs = {}
  if registered or C.ljleak_live(snapshot.epoch, hi, nil, 0) > 0 then
    collect()
    collect()
    self_references(snapshot.epoch)
    local buf, n = grouped(C.ljleak_check, snapshot.epoch, hi)
    recs = build_records(buf, n, {})
  end
  local probs = {}
  for _, p in ipairs(problems) do
    if p.epoch >= snapshot.epoch then probs[#probs + 1] = p end
  end
  return recs, probs
end

--- A readable report of check's results (as `ljleak run` prints them).
function M.format(recs, probs)
  local out = report.format({leaks = recs, summary = report.summarize(recs)}, "text", {brief = true})
  for _, p in ipairs(probs or {}) do out = out .. p.kind .. ": " .. p.message .. "\n" end
  return out
end

-- -- Re-running under the tracker (luajit -lljleak) -------------------------------------------------

local function read_cmdline()
  local f = io.open("/proc/self/cmdline", "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  local argv = {}
  for a in s:gmatch("([^%z]*)%z") do argv[#argv + 1] = a end
  return #argv > 0 and argv or nil
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The launcher next to this module in a checkout, or `ljleak` in PATH.
local function find_launcher()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
  local env = os.getenv("LJLEAK_BIN")
  if env then return env end
  if here and file_exists(here .. "/../../bin/ljleak") then return here .. "/../../bin/ljleak" end
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if file_exists(dir .. "/ljleak") then return dir .. "/ljleak" end
  end
end

-- `luajit -lljleak script.lua` without the tracker: run the same command line again under
-- `ljleak run`, which preloads it.
local function reexec()
  ffi.cdef [[
    int execv(const char *path, char *const argv[]);
    int setenv(const char *name, const char *value, int overwrite);
  ]]
  local argv = read_cmdline()
  local launcher = find_launcher()
  if os.getenv("LJLEAK_REEXEC") then
    error("ljleak: the tracker is still not loaded after re-running under `ljleak run`", 0)
  end
  if not argv or not launcher then
    error("ljleak: cannot re-run this program under the tracker (" .. (argv and "no ljleak launcher found"
      or "/proc/self/cmdline unreadable") .. "); run it with `ljleak run -- ...`", 0)
  end
  local argv2 = {launcher, "run", "--"}
  for _, a in ipairs(argv) do argv2[#argv2 + 1] = a end
  local cargv = ffi.new("char *[?]", #argv2 + 1)
  local keep = {}
  for i, a in ipairs(argv2) do
    keep[i] = ffi.new("char[?]", #a + 1, a)
    cargv[i - 1] = keep[i]
  end
  C.setenv("LJLEAK_REEXEC", "1", 1)
  io.stdout:flush()
  io.stderr:flush()
  C.execv(launcher, cargv)
  error("ljleak: could not re-run under the tracker: execv failed", 0)
end

-- -- Loading --------------------------------------------------------------------------------------

local function load()
  if not M.active() then
    -- `luajit -lljleak ...` without the tracker: re-run the whole command line under it.
    local cmd = not os.getenv("LJLEAK_DIR") and read_cmdline() or {}
    local i = 2
    while cmd[i] and cmd[i]:sub(1, 1) == "-" do  -- luajit's options, up to the script
      local a = cmd[i]
      if a == "-lljleak" or (a == "-l" and cmd[i + 1] == "ljleak") then return reexec() end
      i = i + ((a == "-e" or a == "-l" or a == "-j" or a == "-b") and 2 or 1)
    end
    return
  end
  if getenv("LJLEAK_REGISTRY") ~= "0" then ffi.gc = gc_wrapper end
end

load()

return M
