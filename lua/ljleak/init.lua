-- ljleak's Lua API for the program under test: `local ljleak = require "ljleak"`.
-- Talks to the preloaded tracker (libljleak.so) through the FFI: Lua frames for every
-- allocation, tags, snapshots, mid-run leak checks and the ffi.gc resource registry.
local ffi = require "ffi"

local M = {}

ffi.cdef [[
typedef struct ljleak_rec { uint32_t site, kind; uint64_t blocks, bytes; } ljleak_rec;
typedef struct ljleak_site_info {
  const char *fn; uint32_t depth, lua, ctx, pad; const uintptr_t *ips;
} ljleak_site_info;
int ljleak_tracker_active(void);
int ljleak_lua_attach(uintptr_t L, int depth);
void ljleak_lua_detach(void);
void ljleak_trace_start(int tr, const char *src, int line, const char *name);
void ljleak_trace_flush(void);
uint32_t ljleak_ctx_make(uint32_t epoch, const char *tag, const char *note);
void ljleak_ctx_set(uint32_t ctx);
const char *ljleak_ctx_tag(uint32_t ctx, const char **note, uint32_t *epoch);
int ljleak_annotate(void *p, const char *note);
int ljleak_live(uint32_t lo, uint32_t hi, ljleak_rec *out, int cap);
int ljleak_check(uint32_t lo, uint32_t hi, ljleak_rec *out, int cap);
int ljleak_site(uint32_t id, ljleak_site_info *out);
const char *ljleak_module_of(uintptr_t ip, uintptr_t *bias);
int ljleak_lua_text(uint32_t id, char *buf, int len);
void ljleak_finalizer_enter(void);
int ljleak_finalizer_leave(uintptr_t *out, int cap);
int getpid(void);
void ljleak_pause(int on);
]]

local C = ffi.C
local KINDS = {[1] = "indirect", [2] = "possible", [3] = "reachable", [4] = "definite"}

local function tracker_loaded()
  return (pcall(function() return C.ljleak_tracker_active end))
end

--- Whether allocations are being tracked (the program runs under `ljleak run`, or with the
--- tracker preloaded).
function M.active()
  return tracker_loaded() and C.ljleak_tracker_active() ~= 0
end

local function need_tracker(what)
  if not M.active() then
    error(("ljleak.%s: the tracker is not loaded (run under `ljleak run`, or `luajit -lljleak`)")
      :format(what), 3)
  end
end

-- Where Lua code is, for the registry: {source, line, function} of the caller's caller.
local function where(level)
  local info = debug.getinfo(level + 1, "Sln")
  if not info then return nil end
  return {source = info.short_src, line = info.currentline, ["function"] = info.name}
end

local function where_text(w)
  return w and ("%s:%d"):format(w.source, w.line) or "?"
end

-- -- Lua frames -----------------------------------------------------------------------------

-- Tell the tracker where each JIT trace starts: allocations made by compiled code get that
-- location, flagged approximate.
local function trace_event(what, tr, func, pc)
  if what == "start" then
    local info = require("jit.util").funcinfo(func, pc)
    local src = info.source and info.source:gsub("^[@=]", "") or "?"
    C.ljleak_trace_start(tr, src, info.currentline or -1, info.name or "?")
  elseif what == "flush" then
    C.ljleak_trace_flush()
  end
end

local attached = false

--- Whether allocations get Lua frames (the tracker recognised this LuaJIT).
function M.lua_frames()
  return attached
end

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

-- Turn grouped tracker records into leak records shaped like the JSON report's. What this
-- allocates (libdw's symbol tables...) is ljleak's, not the program's: not tracked.
local build_records_tracked
local function build_records(recs, n, opts)
  C.ljleak_pause(1)
  local ok, res = pcall(build_records_tracked, recs, n, opts)
  C.ljleak_pause(0)
  if not ok then error(res, 0) end
  return res
end

function build_records_tracked(recs, n, opts)
  local report = require "ljleak.report"
  local symbolize = require "ljleak.symbolize"
  local proc = {pid = M.pid(), modules = {}, sites = {}, leaks = {}, lua = {}, ctx = {}}
  local module_index = {}
  local info = ffi.new("ljleak_site_info")
  local bias = ffi.new("uintptr_t[1]")
  local text = ffi.new("char[4096]")
  local note = ffi.new("const char *[1]")
  local ep = ffi.new("uint32_t[1]")
  for i = 0, n - 1 do
    local r = recs[i]
    local id = tonumber(r.site)
    if not proc.sites[id] and C.ljleak_site(id, info) ~= 0 then
      local frames = {}
      for k = 0, info.depth - 1 do
        local ip = info.ips[k]
        local path = C.ljleak_module_of(ip, bias)
        if path ~= nil then
          local p = ffi.string(path)
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
      local site = {id = id, fn = ffi.string(info.fn), frames = frames}
      if info.lua ~= 0 then
        site.lua = info.lua
        local len = C.ljleak_lua_text(info.lua, text, 4096)
        local lframes = {}
        for line, approx, name, src in ffi.string(text, len):gmatch("(%-?%d+)\t(~?)\t([^\t]*)\t([^\n]*)\n") do
          line = tonumber(line)
          lframes[#lframes + 1] = {source = src, line = line >= 0 and line or nil,
                                   ["function"] = name ~= "" and name ~= "?" and name or nil,
                                   approximate = approx == "~" or nil}
        end
        proc.lua[info.lua] = lframes
      end
      if info.ctx ~= 0 then
        site.ctx = info.ctx
        local t = C.ljleak_ctx_tag(info.ctx, note, ep)
        proc.ctx[info.ctx] = {epoch = ep[0], tag = t ~= nil and ffi.string(t) or nil,
                              note = note[0] ~= nil and ffi.string(note[0]) or nil}
      end
      proc.sites[id] = site
    end
    proc.leaks[#proc.leaks + 1] = {kind = opts.kind or KINDS[tonumber(r.kind)], site = id,
                                   blocks = tonumber(r.blocks), bytes = tonumber(r.bytes)}
  end
  return report.build({proc}, {engine = "tracker", symbolizer = symbolize.new({})}).leaks
end

-- Calls query(lo, hi, buf, cap) with a buffer big enough for all its groups.
local function grouped(query, lo, hi)
  local cap = 256
  while true do
    local buf = ffi.new("ljleak_rec[?]", cap)
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
-- ctype, finalizer, where) until the finalizer runs, and misuse is reported.

local registry = {}       -- address -> entry {cdata (weak), ctype, where, epoch}
local problems = {}       -- {kind, message, where, ...}
local orig_gc = ffi.gc

-- Each problem is also appended to LJLEAK_DIR/lua.PID.jsonl at once, for `ljleak run`'s report:
-- finalizers run until the very end of lua_close.
local function problem(kind, message, w, extra)
  local p = {kind = kind, message = message, lua = w and {w} or {}, pid = M.pid(), test = tag}
  for k, v in pairs(extra or {}) do p[k] = v end
  p.epoch = epoch  -- in this process only: which check it belongs to
  problems[#problems + 1] = p
  local dir = os.getenv("LJLEAK_DIR")
  if dir then
    local report = require "ljleak.report"
    local f = io.open(("%s/lua.%d.jsonl"):format(dir, M.pid()), "ab")
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

local function address_of(cd)
  local ok, addr = pcall(function() return tonumber(ffi.cast("uintptr_t", cd)) end)
  return ok and addr ~= 0 and addr or nil
end

local weak_values = {__mode = "v"}

local function gc_wrapper(cd, finalizer)
  local addr = address_of(cd)
  if not addr then return orig_gc(cd, finalizer) end
  local w = where(2)
  local old = registry[addr]
  if finalizer == nil then
    if old then
      registry[addr] = nil
      C.ljleak_annotate(ffi.cast("void *", cd),
        ("ffi.gc finalizer detached at %s by ffi.gc(cd, nil)"):format(where_text(w)))
    end
    return orig_gc(cd, nil)
  end
  if old and old.cdata[1] ~= nil and not rawequal(old.cdata[1], cd) then  -- == compares addresses
    problem("double_finalizer", ("two ffi.gc finalizers for the same address 0x%x (%s), "
      .. "registered at %s and at %s: a double free waiting to happen"):format(
      addr, old.ctype, where_text(old.where), where_text(w)), w)
  end
  local entry = {cdata = setmetatable({cd}, weak_values), ctype = tostring(ffi.typeof(cd)),
                 where = w, epoch = epoch, address = addr}
  registry[addr] = entry
  local bad = ffi.new("uintptr_t[16]")
  return orig_gc(cd, function(c)
    if registry[addr] == entry then registry[addr] = nil end
    C.ljleak_finalizer_enter()
    local ok, err = pcall(finalizer, c)
    local nbad = C.ljleak_finalizer_leave(bad, 16)
    for i = 0, math.min(nbad, 16) - 1 do
      problem("bad_free", ("the ffi.gc finalizer registered at %s freed 0x%x, which the tracker "
        .. "never handed out or had already taken back (double free); the free was not passed on")
        :format(where_text(w), tonumber(bad[i])), w, {address = tonumber(bad[i])})
    end
    if not ok then
      problem("finalizer_error", ("the ffi.gc finalizer registered at %s raised: %s")
        :format(where_text(w), tostring(err)), w)
      error(err, 0)
    end
  end)
end

--- Problems seen by the ffi.gc registry so far (bad frees, double finalizers, finalizer errors),
--- each {kind, message, lua = {where}}.
function M.problems()
  return problems
end

--- Resources registered with ffi.gc since SNAPSHOT (default: ever) whose finalizer has not run,
--- after a full collection: each {ctype, address, lua = {where}}.
function M.retained(snapshot, collected)
  if not collected then
    collectgarbage()
    collectgarbage()
  end
  local lo = snapshot and snapshot.epoch or 0
  local out = {}
  for addr, e in pairs(registry) do
    if e.epoch >= lo and e.cdata[1] ~= nil then
      out[#out + 1] = {kind = "retained", ctype = e.ctype, address = addr, lua = {e.where},
                       message = ("%s at 0x%x, registered with ffi.gc at %s, is still alive after a full "
                         .. "collection (is it referenced by its own finalizer?)"):format(e.ctype, addr,
                         where_text(e.where))}
    end
  end
  table.sort(out, function(a, b) return a.address < b.address end)
  return out
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
  local ok, err = pcall(fn, ...)
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
  local probs = {}
  for _, p in ipairs(problems) do
    if p.epoch >= snapshot.epoch and p.epoch < hi then probs[#probs + 1] = p end
  end
  -- Nothing born since the snapshot is still live, and nothing registered then is still
  -- registered: nothing can be lost, no need to collect and scan (a busted test, usually).
  local registered = false
  for _, e in pairs(registry) do
    if e.epoch >= snapshot.epoch then registered = true break end
  end
  if not registered and C.ljleak_live(snapshot.epoch, hi, nil, 0) == 0 then return {}, probs end
  collectgarbage()
  collectgarbage()
  for _, r in ipairs(M.retained(snapshot, true)) do probs[#probs + 1] = r end
  local buf, n = grouped(C.ljleak_check, snapshot.epoch, hi)
  return build_records(buf, n, {}), probs
end

--- A readable report of check's results (as `ljleak run` prints them).
function M.format(recs, probs)
  local report = require "ljleak.report"
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
  local exe = "/proc/self/exe"
  local new = {"luajit", launcher, "run", "--"}
  for _, a in ipairs(argv) do new[#new + 1] = a end
  local cargv = ffi.new("char *[?]", #new + 1)
  local keep = {}
  for i, a in ipairs(new) do
    keep[i] = ffi.new("char[?]", #a + 1, a)
    cargv[i - 1] = keep[i]
  end
  C.setenv("LJLEAK_REEXEC", "1", 1)
  io.stdout:flush()
  io.stderr:flush()
  C.execv(exe, cargv)
  error("ljleak: could not re-run under the tracker: execv failed", 0)
end

-- -- Loading --------------------------------------------------------------------------------------

local function attach()
  -- The address of a coroutine's lua_State: the tracker reaches the VM's global state from it.
  local co = coroutine.create(function()
    local addr = tostring(coroutine.running()):match("0x(%x+)")
    return addr and C.ljleak_lua_attach(ffi.cast("uintptr_t", tonumber(addr, 16)),
      tonumber(os.getenv("LJLEAK_LUA_DEPTH")) or 6) ~= 0
  end)
  local ok, res = coroutine.resume(co)
  attached = ok and res or false
  if attached and jit and jit.attach then jit.attach(trace_event, "trace") end
end

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
  attach()
  ffi.gc = gc_wrapper
  -- busted: hook each busted core as it is made, to tag allocations with the running test.
  local function busted_loader(name)
    if name ~= "busted.core" then return nil end
    for _, loader in ipairs(package.loaders) do
      if loader ~= busted_loader then
        local f = loader(name)
        if type(f) == "function" then
          return function(...)
            local new = f(...)
            return function(...) return require("ljleak.busted").install(new(...)) end
          end
        end
      end
    end
  end
  table.insert(package.loaders, 2, busted_loader)
  -- At lua_close: stop looking at the VM before it is freed.
  M._closer = orig_gc(ffi.new("char[1]"), function() C.ljleak_lua_detach() end)
end

load()

return M
