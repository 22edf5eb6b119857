-- ljleak's Lua API for the program under test: `local ljleak = require "ljleak"`.
-- Talks to the preloaded tracker (libljleak.so) through the FFI: Lua frames for every
-- allocation, tags, snapshots, mid-run leak checks and the ffi.gc resource registry.
local ffi = require "ffi"

local M = {}

ffi.cdef [[
int ljleak_tracker_active(void);
int ljleak_lua_attach(uintptr_t L, int depth);
void ljleak_lua_detach(void);
void ljleak_trace_start(int tr, const char *src, int line, const char *name);
void ljleak_trace_flush(void);
]]

local C = ffi.C

local function tracker_loaded()
  return pcall(function() return C.ljleak_tracker_active end)
end

--- Whether allocations are being tracked (the program runs under `ljleak run`, or with the
--- tracker preloaded).
function M.active()
  return tracker_loaded() and C.ljleak_tracker_active() ~= 0
end

-- -- Lua frames ---------------------------------------------------------------------------

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

local function attach()
  if attached or not M.active() then return attached end
  -- The address of a coroutine's lua_State: the tracker reaches the VM's global state from it.
  local co = coroutine.create(function()
    local addr = tostring(coroutine.running()):match("0x(%x+)")
    return addr and C.ljleak_lua_attach(ffi.cast("uintptr_t", tonumber(addr, 16)),
      tonumber(os.getenv("LJLEAK_LUA_DEPTH")) or 6) ~= 0
  end)
  local ok, res = coroutine.resume(co)
  attached = ok and res or false
  if attached then
    if jit and jit.attach then jit.attach(trace_event, "trace") end
    -- Detach when the state closes: the tracker must not look at a freed VM.
    M._closer = ffi.gc(ffi.new("char[1]"), function() C.ljleak_lua_detach() end)
  end
  return attached
end

--- Whether allocations get Lua frames (the tracker recognised this LuaJIT).
function M.lua_frames()
  return attached
end

attach()

return M
