-- The part of ljleak that every LuaJIT process under `ljleak run` loads first (through LUA_INIT):
-- attaches the tracker to the VM, so allocations get Lua frames, and hooks busted when it starts.
-- The API (`require "ljleak"`) builds on it; only that one wraps ffi.gc.
local ffi = require "ffi"

local const = require "ljleak.const"

local M = {}

-- -- What the in-process side calls, captured when it loads -----------------------------------
-- Code under test replaces globals (specs mock _G.require) and test frameworks wrap the ffi
-- module (busted memoizes ffi.typeof with strong keys: every cdata passed to it would live for
-- the whole suite). ljleak's in-process code calls only what is captured here.

-- The function a memoizing wrapper forwards to (busted/luajit.lua keeps it as `original`).
local function unwrapped(fn)
   for _ = 1, 4 do
      if type(fn) ~= "function" or not debug.getinfo(fn, "S").what:match("Lua") then return fn end
      local inner
      for i = 1, 16 do
         local name, v = debug.getupvalue(fn, i)
         if not name then break end
         if name == "original" and type(v) == "function" then inner = v end
      end
      if not inner then return fn end
      fn = inner
   end
   return fn
end

M.require = require
M.ffi = {typeof = unwrapped(ffi.typeof), cast = ffi.cast, gc = ffi.gc, new = ffi.new,
         string = ffi.string, istype = ffi.istype, fill = ffi.fill, C = ffi.C}
M.getupvalue, M.getinfo = debug.getupvalue, debug.getinfo
M.getenv = os.getenv

-- The FFI ABI of libljleak.so and libljleak_vg.so, as csrc/ljleak.h declares it (t/abi_spec.lua
-- checks that the two agree). Mid-run reports come back as raw reports (doc/raw-format.md).
ffi.cdef [[
int ljleak_tracker_active(void);
int ljleak_lua_probe(uintptr_t L, int step);
int ljleak_lua_attach(uintptr_t L, int depth);
void ljleak_lua_detach(void);
uintptr_t ljleak_lua_attached(void);
void ljleak_trace_start(int tr, const char *src, int line, const char *name);
void ljleak_trace_flush(void);
uint32_t ljleak_ctx_make(uint32_t epoch, const char *tag, const char *note);
void ljleak_ctx_set(uint32_t ctx);
int ljleak_annotate(void *p, const char *note);
uint64_t ljleak_live_blocks(uint32_t lo, uint32_t hi);
size_t ljleak_live_addrs(uint32_t lo, uint32_t hi, uintptr_t *out, size_t cap);
size_t ljleak_live(uint32_t lo, uint32_t hi, char **raw);
size_t ljleak_check(uint32_t lo, uint32_t hi, char **raw);
size_t ljleak_unheld(uint32_t lo, uint32_t hi, uintptr_t *out, size_t cap);
size_t ljleak_lua_raw(uint32_t id, char **raw);
void ljleak_raw_free(char *raw);
typedef struct ljleak_live_count {
  uint64_t stack;
  uint64_t blocks, bytes;
  uint32_t site, epoch;
} ljleak_live_count;
int ljleak_site_live(uint32_t lo, uint32_t hi, ljleak_live_count *out, int cap);
size_t ljleak_live_sites(const uint32_t *sites, int n, char **raw);
int ljleak_memstat(uint64_t *out);
int ljleak_soak_on(void (*cb)(void));
void ljleak_finalizer_enter(void);
int ljleak_finalizer_leave(uintptr_t *out, int cap);
uint32_t ljleak_here(void);
void ljleak_pause(int on);
int ljleak_vg_running(void);
void ljleak_vg_mark(const char *text);
int ljleak_vg_leak_check(void *ms, unsigned long *out);
]]

ffi.cdef [[
int getpid(void);
void *lua_getallocf(void *L, void **ud);
]]

local C = ffi.C

-- A raw report (doc/raw-format.md) that the tracker wrote into its own memory, *M.raw_out, and
-- whose length is N (ljleak_live, ljleak_check, ljleak_lua_raw): as a string, the memory given back.
M.raw_out = ffi.new("char *[1]")
local tostr = M.ffi.string
function M.raw_text(n)
   local p = M.raw_out[0]
   if p == nil then error("ljleak: the tracker could not get memory for its report", 2) end
   local text = tostr(p, n)
   C.ljleak_raw_free(p)
   return text
end

-- Whether libljleak.so is in the process (its symbol resolves). Known once it is; asked again
-- while it is not (no closure made per call: the API asks at every tag and snapshot).
local loaded = false
local function tracker_symbol() return C.ljleak_tracker_active end
local function tracker_loaded()
   if not loaded then loaded = (pcall(tracker_symbol)) end
   return loaded
end

--- Whether allocations are being tracked.
function M.active()
   return tracker_loaded() and C.ljleak_tracker_active() ~= 0
end

-- Tell the tracker where each JIT trace starts: allocations made by compiled code get that
-- location, flagged approximate.
local funcinfo = jit and require("jit.util").funcinfo

local function trace_event(what, tr, func, pc)
   if what == "start" then
      local info = funcinfo(func, pc)
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

-- Calls fn(address of the running lua_State) inside a new coroutine; its result, or false.
local function in_coroutine(fn)
   local ok, res = coroutine.resume(coroutine.create(function()
      local addr = tostring(coroutine.running()):match("0x(%x+)")
      return addr and fn(ffi.cast("uintptr_t", tonumber(addr, 16)))
   end))
   return ok and res or false
end

-- The tracker learns where this LuaJIT keeps the VM's state from three calls made from three
-- coroutines (the only word of global_State that follows all of them is cur_L), then attaches.
local function attach()
   local depth = tonumber(os.getenv(const.ENV.LUA_DEPTH)) or const.LUA_DEPTH_DEFAULT
   in_coroutine(function(L) return C.ljleak_lua_probe(L, 1) end)
   in_coroutine(function(L) return C.ljleak_lua_probe(L, 2) end)
   attached = in_coroutine(function(L) return C.ljleak_lua_attach(L, depth) ~= 0 end)
   if attached and M.active() and jit and jit.attach then jit.attach(trace_event, "trace") end
end

-- busted: hook each busted core as it is made, to tag allocations with the running test.
local function busted_loader(name)
   if name ~= "busted.core" then return nil end
   for _, loader in ipairs(package.loaders) do
      if loader ~= busted_loader then
         local f = loader(name)
         if type(f) == "function" then
            return function(...)
               local new = f(...)
               return function(...) return M.require("ljleak.busted").install(new(...)) end
            end
         end
      end
   end
end

-- -- Under Valgrind (--engine=valgrind preloads libljleak_vg.so) ------------------------------

local vg_ms   -- the state's allocator, lj_alloc's malloc_state

--- Whether the program runs under Valgrind with ljleak's client requests available.
function M.valgrind()
   local ok, running = pcall(function() return C.ljleak_vg_running() end)
   return ok and running ~= 0
end

--- A line in Valgrind's XML output (a <clientmsg>): ljleak's own markers.
function M.vg_mark(text)
   C.ljleak_vg_mark((text:gsub("[%c]", " ")))
end

local vg_out = ffi.new("unsigned long[4]")

--- A Valgrind leak check of what was lost since the last one (memcheck writes its records);
--- returns the bytes definitely lost in all, possibly lost in all.
function M.vg_leak_check()
   C.ljleak_vg_leak_check(vg_ms, vg_out)
   return tonumber(vg_out[0]), tonumber(vg_out[1])
end

local function vg_attach()
   local ud = ffi.new("void *[1]")
   coroutine.resume(coroutine.create(function()
      local addr = tostring(coroutine.running()):match("0x(%x+)")
      if addr then C.lua_getallocf(ffi.cast("void *", tonumber(addr, 16)), ud) end
   end))
   vg_ms = ud[0]
end

if M.active() or M.valgrind() then
   attach()   -- Lua frames (under Valgrind, libljleak_vg.so gives them through trampolines)
   if not M.active() then vg_attach() end
   table.insert(package.loaders, 2, busted_loader)
   -- At lua_close: stop looking at the VM before it is freed, if it is still the one attached (a
   -- program may have opened another since: nginx opens one per configuration it loads).
   local mine = C.ljleak_lua_attached()
   M._closer = ffi.gc(ffi.new("char[1]"), function()
      if C.ljleak_lua_attached() == mine then C.ljleak_lua_detach() end
   end)
end

return M
