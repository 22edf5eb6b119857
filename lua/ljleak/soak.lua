-- In the program under `ljleak soak` (LJLEAK_SOAK = "lua MODULE.FUNCTION N W" or "url N W"): the
-- growth check of one unit of work done N times, its verdict written to LJLEAK_DIR/growth.PID.json
-- for the CLI. `lua`: ljleak.stable on the function (luajit -e runs M.main). `url`: in the Lua
-- state of a server (LJLEAK_LUA_BOOT runs M.main), a sample after each request, asked for by the
-- CLI with a signal and taken when the server next waits for events (ljleak_soak_on); each sample
-- acknowledged in LJLEAK_DIR/soak.PID (the count so far), the verdict after the Nth.
local M = {}

local vm = require "ljleak.vm"
local const = vm.require "ljleak.const"
local json = vm.require "ljleak.json"

M.RESULT = "growth.%d.json"
M.ACK = "soak.%d"

local C = vm.ffi.C

-- Write TEXT to DIR/NAME whole (a temporary file renamed), ljleak's work not tracked.
local function write(dir, name, text)
   C.ljleak_pause(1)
   local path = dir .. "/" .. name
   local f = io.open(path .. ".tmp", "wb")
   if f then
      f:write(text)
      f:close()
      os.rename(path .. ".tmp", path)
   end
   C.ljleak_pause(0)
end

-- The verdict as the CLI reads it: {ok, iterations, warmup, sites (live records with their
-- slopes), memory (the series per iteration, and `allocator`)}.
local function verdict(ok, sites, mem, n, warmup)
   local out = {ok = ok, iterations = n, warmup = warmup, sites = json.array(sites), memory = mem}
   for _, k in ipairs({"live", "rss", "arena", "hblkhd", "uordblks", "fordblks"}) do
      mem[k] = json.array(mem[k])
   end
   return json.encode(out)
end

local function parse(spec)
   local mode, rest = spec:match("^(%a+) (.*)$")
   if mode == "lua" then
      local fn, n, w = rest:match("^(%S+) (%d+) (%d+)$")
      return mode, tonumber(n), tonumber(w), fn
   end
   local n, w = (rest or ""):match("^(%d+) (%d+)$")
   return mode, tonumber(n), tonumber(w)
end

-- `--lua=MODULE.FUNCTION`: require MODULE, call its FUNCTION(i) N times under ljleak.stable.
local function run_lua(dir, target, n, warmup)
   local ljleak = require "ljleak"
   local modname, fname = target:match("^(.+)%.([%a_][%w_]*)$")
   local ok, mod = pcall(require, modname or target)
   if not ok then
      error(("ljleak soak: --lua=%s: cannot load module %s: %s"):format(target, modname,
         tostring(mod):match("^[^\n]*")), 0)
   end
   local fn = type(mod) == "table" and mod[fname]
   if type(fn) ~= "function" then
      error(("ljleak soak: --lua=%s: module %s has no function %s"):format(target, modname, fname), 0)
   end
   local stable, sites, mem = ljleak.stable(fn, {iterations = n, warmup = warmup})
   write(dir, M.RESULT:format(C.getpid()), verdict(stable, sites, mem, n, warmup))
end

M.server = nil   -- the server's series and its callback, kept alive

-- `--url`: in a server's Lua state, samples when asked.
local function run_server(dir, n, warmup)
   local ljleak = require "ljleak"
   if jit then jit.off() jit.flush() end   -- exact Lua lines: no trace stands for them
   local series = ljleak.series(warmup)
   local count = 0
   local function sample()
      count = count + 1
      series:sample(count)
      if count == n then
         local ok, sites, mem = series:finish()
         write(dir, M.RESULT:format(C.getpid()), verdict(ok, sites, mem, n, warmup))
      end
      write(dir, M.ACK:format(C.getpid()), tostring(count))
   end
   local cb = vm.ffi.cast("void (*)(void)", function()
      local ok, err = pcall(sample)
      if not ok then write(dir, M.ACK:format(C.getpid()), "error " .. tostring(err)) end
   end)
   M.server = {series = series, cb = cb}
   C.ljleak_soak_on(cb)
end

--- Called in the program when LJLEAK_SOAK is set (nothing otherwise).
function M.main()
   local spec, dir = os.getenv(const.ENV.SOAK), os.getenv(const.ENV.DIR)
   if not spec or not dir or not vm.active() then return end
   local mode, n, warmup, target = parse(spec)
   if mode == "lua" and target then
      local ok, err = pcall(run_lua, dir, target, n, warmup)
      if not ok then   -- one line, no traceback: what was wrong with --lua
         io.stderr:write(tostring(err), "\n")
         os.exit(1)
      end
      return
   end
   if mode == "url" and n then return run_server(dir, n, warmup) end
   error(("ljleak soak: bad %s: %s"):format(const.ENV.SOAK, spec), 0)
end

return M
