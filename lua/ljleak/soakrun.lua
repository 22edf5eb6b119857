-- `ljleak soak`: one unit of work done N times under the tracker, and the sites whose live set
-- grows with it. `--lua=MODULE.FUNCTION`: CMD (a LuaJIT, default `luajit`) runs ljleak.stable on
-- the function. `--url=URL`: CMD is a server (nginx) whose Lua states run ljleak.soak at start
-- (LJLEAK_LUA_BOOT); the URL is fetched N times over loopback, each response followed by a sample
-- (a signal to the server's processes that catch it; acknowledged in the run directory); then the
-- server is stopped (SIGQUIT, nginx's graceful stop). The program side writes growth.PID.json,
-- read back here into the report's `growth` records and `soak` object.
local cjson = require "cjson"
local lfs = require "lfs"
local psignal = require "posix.signal"
local psocket = require "posix.sys.socket"
local ptime = require "posix.time"
local unistd = require "posix.unistd"

local const = require "ljleak.const"
local engines = require "ljleak.engine"
local json = require "ljleak.json"
local run = require "ljleak.run"
local util = require "ljleak.util"

local M = {}

local fail = util.fail

M.TIMEOUT = 60   -- seconds a server may take to answer, or to acknowledge a sample

local function warn(fmt, ...)
   io.stderr:write("ljleak: ", fmt:format(...), "\n")
end

local function sleep(seconds)
   ptime.nanosleep({tv_sec = math.floor(seconds), tv_nsec = math.floor(seconds % 1 * 1e9)})
end

local function now()
   local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
   return t.tv_sec + t.tv_nsec * 1e-9
end

-- -- Options ------------------------------------------------------------------------------------

local function count_option(name, value, min)
   local n = tostring(value):match("^%d+$") and tonumber(value)
   if not n or n < min then fail("usage", "soak: --%s=%s: must be an integer >= %d", name, tostring(value), min) end
   return n
end

-- http://127.0.0.1:PORT/PATH (or localhost): host, port, path; a usage error for anything else.
function M.parse_url(url)
   local host, port, path = url:match("^http://([^/:]+):?(%d*)(/?.*)$")
   if not host then fail("usage", "soak: --url=%s: expected http://127.0.0.1:PORT/PATH", url) end
   if host == "localhost" then host = "127.0.0.1" end
   if not host:match("^127%.%d+%.%d+%.%d+$") then
      fail("usage", "soak: --url=%s: only loopback addresses (127.x.x.x, localhost): the server runs here", url)
   end
   return host, tonumber(port ~= "" and port or "80"), path ~= "" and path or "/"
end

-- -- HTTP over loopback ------------------------------------------------------------------------------

-- One HTTP/1.0 GET: the status code, or nil and why.
function M.get(host, port, path)
   local fd, err = psocket.socket(psocket.AF_INET, psocket.SOCK_STREAM, 0)
   if not fd then return nil, err end
   psocket.setsockopt(fd, psocket.SOL_SOCKET, psocket.SO_RCVTIMEO, M.TIMEOUT, 0)
   local ok, cerr = psocket.connect(fd, {family = psocket.AF_INET, addr = host, port = port})
   if not ok then
      unistd.close(fd)
      return nil, cerr
   end
   psocket.send(fd, ("GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n"):format(path))
   local parts = {}
   while true do
      local data = psocket.recv(fd, 65536)
      if not data or data == "" then break end
      parts[#parts + 1] = data
   end
   unistd.close(fd)
   local status = table.concat(parts):match("^HTTP/%d%.%d (%d%d%d)")
   if not status then return nil, "no HTTP response" end
   return tonumber(status)
end

-- -- The server's processes ------------------------------------------------------------------------

-- PID and its descendants (from /proc).
local function family(pid)
   local parent_of = {}
   for name in lfs.dir("/proc") do
      local p = tonumber(name)
      if p then
         local f = io.open("/proc/" .. name .. "/stat")
         local stat = f and f:read("*l")
         if f then f:close() end
         local ppid = stat and stat:match("%) %S+ (%d+)")
         if ppid then parent_of[p] = tonumber(ppid) end
      end
   end
   local out, seen = {pid}, {[pid] = true}
   local grew = true
   while grew do
      grew = false
      for p, pp in pairs(parent_of) do
         if seen[pp] and not seen[p] then
            seen[p], out[#out + 1], grew = true, p, true
         end
      end
   end
   return out
end

-- Does process PID catch signal SIG (its SigCgt mask)?
local function catches(pid, sig)
   local f = io.open("/proc/" .. pid .. "/status")
   if not f then return false end
   local text = f:read("*a")
   f:close()
   local mask = text:match("SigCgt:%s*(%x+)")
   if not mask then return false end
   local bitpos = sig - 1
   local digit = #mask - math.floor(bitpos / 4)
   if digit < 1 then return false end
   local v = tonumber(mask:sub(digit, digit), 16)
   return math.floor(v / 2 ^ (bitpos % 4)) % 2 == 1
end

-- The samples acknowledged so far (the most of any process), or nil and an error a process wrote.
local function acknowledged(run_dir)
   local most = 0
   for name in lfs.dir(run_dir) do
      if name:match("^soak%.%d+$") then
         local f = io.open(run_dir .. "/" .. name)
         local text = f and f:read("*a") or ""
         if f then f:close() end
         if text:match("^error ") then return nil, text:sub(7) end
         most = math.max(most, tonumber(text) or 0)
      end
   end
   return most
end

local function alive(pid)
   return psignal.kill(pid, 0) == 0
end

-- Drive the server (PID): N requests, each followed by a sample; then stop it.
local function drive_url(cfg, pid, run_dir)
   local host, port, path = cfg.host, cfg.port, cfg.path
   local sig = psignal.SIGRTMIN and psignal.SIGRTMIN + 6 or 40
   local targets
   local function stop(fmt, ...)
      if fmt then cfg.failure = fmt:format(...) end
      psignal.kill(pid, psignal.SIGQUIT)
   end
   -- The first request: wait until the server listens.
   local deadline = now() + M.TIMEOUT
   for i = 1, cfg.iterations do
      local status, err = M.get(host, port, path)
      while not status and i == 1 and now() < deadline and alive(pid) do
         sleep(0.05)
         status, err = M.get(host, port, path)
      end
      if not status then return stop("soak: GET %s failed at request %d: %s", cfg.url, i, tostring(err)) end
      if status >= 400 then cfg.bad_status = cfg.bad_status or {status = status, request = i} end
      if not targets then
         targets = {}
         for _, p in ipairs(family(pid)) do
            if catches(p, sig) then targets[#targets + 1] = p end
         end
         if #targets == 0 then
            return stop("soak: no process of %s took ljleak's sample signal: is it a server with Lua "
               .. "(nginx with the Lua module)?", cfg.command[1])
         end
      end
      for _, p in ipairs(targets) do psignal.kill(p, sig) end
      local wait_until = now() + M.TIMEOUT
      while true do
         local n, why = acknowledged(run_dir)
         if not n then return stop("soak: the sample after request %d failed in the server: %s", i, why) end
         if n >= i then break end
         if now() > wait_until or not alive(pid) then
            return stop("soak: no sample after request %d (the server must run its Lua in the process that "
               .. "answers: nginx with one worker, or master_process off)", i)
         end
         sleep(0.001)
      end
   end
   stop()
end

-- -- The report ----------------------------------------------------------------------------------

-- The growth.PID.json files of RUN_DIR into REP: `growth` records (each with its pid) and `soak`.
local function add_growth(cfg, rep, run_dir, problems)
   local records, soak = {}, {target = cfg.target, iterations = cfg.iterations, warmup = cfg.warmup,
                              processes = {}}
   for name in lfs.dir(run_dir) do
      local pid = tonumber(name:match("^growth%.(%d+)%.json$") or "")
      if pid then
         local text = util.read_file(run_dir .. "/" .. name)
         local ok, v = pcall(cjson.decode, text or "")
         if not ok or type(v) ~= "table" then
            problems[#problems + 1] = {pid = pid, message = ("soak: %s: not a growth verdict"):format(name)}
         else
            for _, r in ipairs(v.sites or {}) do
               r.kind, r.pid = "growth", pid
               records[#records + 1] = r
            end
            local mem = v.memory or {}
            soak.processes[#soak.processes + 1] = {pid = pid, stable = v.ok, memory = mem,
                                                   allocator = mem.allocator ~= cjson.null and mem.allocator or nil}
            mem.allocator = nil
         end
      end
   end
   table.sort(records, function(a, b) return a.bytes_per_iteration > b.bytes_per_iteration end)
   if cfg.failure then problems[#problems + 1] = {message = cfg.failure} end
   if cfg.bad_status then
      problems[#problems + 1] = {message = ("soak: %s answered HTTP %d (first at request %d)")
         :format(cfg.url, cfg.bad_status.status, cfg.bad_status.request)}
   end
   if #soak.processes == 0 and not cfg.failure then
      problems[#problems + 1] = {message = "soak: no process gave a growth verdict"}
      cfg.no_verdict = true
   end
   soak.processes = json.array(soak.processes)
   rep.growth, rep.soak = json.array(records), soak
end

-- -- The command ---------------------------------------------------------------------------------

function M.command(args, command, EXIT)
   if (args.lua and args.url) or not (args.lua or args.url) then
      fail("usage", "soak: give one of --lua=MODULE.FUNCTION and --url=URL")
   end
   if args.engine ~= "tracker" then
      fail("usage", "soak: --engine=%s cannot count live blocks after each iteration; soak uses the tracker",
         args.engine)
   end
   local cfg = {iterations = count_option("iterations", args.iterations, 16)}
   cfg.warmup = args.warmup and count_option("warmup", args.warmup, 0) or math.floor(cfg.iterations / 10)
   if cfg.iterations - cfg.warmup < 8 then
      fail("usage", "soak: --warmup=%d leaves fewer than 8 of the %d iterations", cfg.warmup, cfg.iterations)
   end
   local env = {}
   local hooks = {report = function(rep, run_dir, problems) add_growth(cfg, rep, run_dir, problems) end}
   if args.lua then
      if not args.lua:match("^[%a_][%w_.]*%.[%a_][%w_]*$") then
         fail("usage", "soak: --lua=%s: expected MODULE.FUNCTION (a module require finds, and its function)", args.lua)
      end
      cfg.target = args.lua
      command = (command and #command > 0) and command or {"luajit"}
      local argv = {}
      for i, a in ipairs(command) do argv[i] = a end
      argv[#argv + 1] = "-e"
      argv[#argv + 1] = "require('ljleak.soak').main()"
      command = argv
      env[const.ENV.SOAK] = ("lua %s %d %d"):format(args.lua, cfg.iterations, cfg.warmup)
   else
      if not command or #command == 0 then
         fail("usage", "soak: --url needs the server to run: ljleak soak --url=URL [options] -- nginx ARGS...")
      end
      cfg.host, cfg.port, cfg.path = M.parse_url(args.url)
      cfg.url, cfg.target, cfg.command = args.url, args.url, command
      env[const.ENV.SOAK] = ("url %d %d"):format(cfg.iterations, cfg.warmup)
      env[const.ENV.LUA_BOOT] = (engines.lua_init(true) or "") .. "\nrequire('ljleak.soak').main()"
      hooks.drive = function(pid, run_dir) drive_url(cfg, pid, run_dir) end
   end
   local code = run.run(args, command, env, EXIT, nil, hooks)
   if cfg.failure then warn("%s", cfg.failure) end
   -- No verdict: ljleak could not do its job (2), unless a leak already failed the run.
   if (cfg.failure or cfg.no_verdict) and code ~= tonumber(args.error_exitcode) then code = EXIT.failure end
   return code
end

return M
