-- Invisible to the suite, and never a lost or silently empty report: the program keeps its fds,
-- its Lua environment and its signals; every process started is checked or listed with why not;
-- processes that become another user still deliver their report.
local cjson = require "cjson"
local lfs = require "lfs"
local psignal = require "posix.signal"
local ptime = require "posix.time"
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"
local h = require "t.helper"

local PROG = h.ROOT .. "/build/t/prog/"

-- The fds in ls's output, below 1000 (the program's range; when this suite itself runs under the
-- tracker, the "plain" run has the outer tracker's fds above it too).
local function fd_list(out)
   local fds = {}
   for fd in out:gmatch("(%d+)\n") do
      if tonumber(fd) < 1000 then fds[#fds + 1] = tonumber(fd) end
   end
   table.sort(fds)
   return fds
end

-- All the fds in ls's output.
local function all_fds(out)
   local fds = {}
   for fd in out:gmatch("(%d+)\n") do fds[#fds + 1] = tonumber(fd) end
   return fds
end

describe("file descriptors", function()
   it("are the program's own: the tracker's are above its range, and never inherited by an exec", function()
      -- Both start from 0, 1 and 2 only: what this suite's own process has open at the time (a
      -- file its collector has not closed yet) must not differ between the two.
      local list = {"sh", "-c", "ls /proc/$$/fd; echo --; exec env -u LD_PRELOAD ls /proc/self/fd"}
      local _, plain = h.run(list, {env = {LD_PRELOAD = false, LJLEAK_DIR = false}, close_fds = true})
      local _, code, _, traced = h.ljleak_run(list, nil, {close_fds = true})
      assert.are.equal(0, code)
      local plain_sh, plain_exec = plain:match("^(.-)%-%-\n(.*)$")
      local sh, exec = traced:match("^(.-)%-%-\n(.*)$")
      assert.are.same(fd_list(plain_sh), fd_list(sh))
      assert.are.same(all_fds(plain_exec), all_fds(exec))   -- nothing of the tracker's crosses an exec
   end)

   it("survive a program that closes every fd it does not know and reuses the numbers", function()
      local r, code, err = h.ljleak_run({PROG .. "closefds"})
      assert.is_nil(err:find("closefds: the file", 1, true))
      assert.are.equal(42, code)
      h.only_definite(r, 1, 42)
      h.one(r, "definite", "leak_42")
   end)
end)

describe("the user's Lua environment", function()
   it("does not reach ljleak itself, and reaches the program unchanged", function()
      local code, out = h.run({h.BIN, "run", "--", "luajit", "-e",
                               "io.write(package.path, '|', os.getenv('LUA_CPATH'))"},
         {env = {LUA_PATH = "/nowhere/?.lua", LUA_CPATH = "/nowhere/?.so", LUA_INIT = "io.write('init|')"}})
      assert.are.equal(0, code)
      assert.are.equal("init|/nowhere/?.lua|/nowhere/?.so", out)
   end)

   it("leaves the program's LUA_PATH and LUA_CPATH unset when the user set none", function()
      local code, out = h.run({h.BIN, "run", "--", "luajit", "-e",
                               "io.write(tostring(os.getenv('LUA_PATH')), '|', tostring(os.getenv('LUA_CPATH')), "
                               .. "'|', tostring(package.path:find('ljleak', 1, true)))"},
         {env = {LUA_PATH = false, LUA_CPATH = false, LUA_INIT = false}})
      assert.are.equal(0, code)
      assert.are.equal("nil|nil|nil", out)
   end)

   it("runs a LUA_INIT that exits in the program only", function()
      local code, out, err = h.run({h.BIN, "run", "--", "luajit", "-e", "print('never')"},
         {env = {LUA_INIT = "os.exit(3)"}})
      assert.are.equal(3, code)
      assert.are.equal("", out)
      assert.matches("leak check of 1 process", err, 1, true)
   end)
end)

describe("processes that were not checked", function()
   it("are listed with the reason: an exec with LD_PRELOAD removed", function()
      local r, code, err = h.ljleak_run({"sh", "-c", "exec env -u LD_PRELOAD luajit t/leak/malloc_dropped.lua"})
      assert.are.equal(2, code)   -- nothing at all was checked
      assert.matches("no process was checked", err, 1, true)
      assert.matches("not checked: process %d+ exec'd /usr/bin/luajit, which runs with an environment without the "
         .. "tracker in LD_PRELOAD", err)
      assert.are.equal(false, r.processes[1].checked)
      assert.matches("without the tracker in LD_PRELOAD", r.processes[1].reason, 1, true)
   end)

   it("are listed with the reason: an exec of a static binary, which --fail-on=unchecked fails", function()
      local cmd = {"sh", "-c", "luajit t/leak/malloc_dropped.lua; exec " .. PROG .. "static_hello"}
      local r, code, err = h.ljleak_run(cmd, {"--fail-on=definite,unchecked", "--error-exitcode=9"})
      assert.are.equal(9, code)
      h.only_definite(r, 1, 100)   -- the luajit the shell ran first was checked
      assert.matches("static_hello, which is statically linked", err, 1, true)
      local unchecked = {}
      for _, p in ipairs(r.processes) do
         if p.checked == false then unchecked[#unchecked + 1] = p.reason end
      end
      assert.are.equal(1, #unchecked)
   end)

   it("include a process killed before its exit handlers ran", function()
      local r, code = h.ljleak_run({"sh", "-c",
         "luajit -e 'local ffi = require(\"ffi\") ffi.cdef(\"int raise(int);\") ffi.C.raise(9)' ; true"})
      assert.are.equal(0, code)
      local found
      for _, p in ipairs(r.processes) do
         if p.checked == false then found = p.reason end
      end
      assert.matches("ended without running its exit handlers", found, 1, true)
   end)

   it("cannot hide behind a relative TMPDIR and a change of directory", function()
      local dir = h.tmpdir()
      local r, code = h.ljleak_run({"sh", "-c", "cd / && exec luajit " .. h.ROOT .. "/t/leak/malloc_dropped.lua"}, nil,
         {cwd = dir, env = {TMPDIR = "."}})
      h.rmtree(dir)
      assert.are.equal(42, code)
      h.only_definite(r, 1, 100)
   end)
end)

-- Runs `ljleak ARGS...` in the background (ENV added); returns its pid and a function that waits
-- for it and returns its exit code and stderr.
local function background(args, env)
   local dir = h.tmpdir()
   local err = dir .. "/stderr"
   local pid = assert(unistd.fork())
   if pid == 0 then
      local fcntl = require "posix.fcntl"
      local e = fcntl.open(err, fcntl.O_WRONLY + fcntl.O_CREAT, 384)
      unistd.dup2(e, 2)
      unistd.chdir(h.ROOT)
      for k, v in pairs(env or {}) do require("posix.stdlib").setenv(k, v) end
      local t = {[0] = h.BIN}
      for i, a in ipairs(args) do t[i] = a end
      unistd.execp(h.BIN, t)
      unistd._exit(127)
   end
   return pid, function()
      local _, how, status = wait.wait(pid)
      local text = h.read_file(err)
      h.rmtree(dir)
      return how == "exited" and status or 128 + status, text
   end
end

local function sleep(s) ptime.nanosleep({tv_sec = math.floor(s), tv_nsec = math.floor(s % 1 * 1e9)}) end

-- Waits until FILE exists (the program wrote it: it is running), for at most 20 s.
local function await(file)
   for _ = 1, 200 do
      if lfs.attributes(file) then return true end
      sleep(0.1)
   end
   return false
end

describe("the command's start", function()
   it("gives the program the signal mask ljleak got, not the signals ljleak keeps blocked for itself", function()
      local list = {"sh", "-c", "grep '^Sig\\(Blk\\|Ign\\)' /proc/self/status"}
      local code, plain = h.run(list, {env = h.UNTRACED})
      assert.are.equal(0, code)
      local _, tcode, _, traced = h.ljleak_run(list)
      assert.are.equal(0, tcode)
      assert.matches("^SigBlk:", plain)
      assert.are.equal(plain, traced)
   end)

   it("runs a file that is not a binary and has no #! under /bin/sh with its arguments, as execvp does", function()
      local dir = h.tmpdir()
      local script = dir .. "/plain-script"
      h.write_file(script, 'printf "ran %s %s\\n" "$1" "$2"\n')
      assert(require("posix.sys.stat").chmod(script, tonumber("755", 8)) == 0)
      local _, code, _, out = h.ljleak_run({script, "one", "two words"})
      h.rmtree(dir)
      assert.are.equal(0, code)
      assert.are.equal("ran one two words\n", out)
   end)
end)

describe("signals", function()
   -- t/prog/graceful: leaks 123 bytes, says it runs, ends cleanly on SIGTERM or SIGQUIT.
   local GRACEFUL = PROG .. "graceful"

   for _, sig in ipairs {"SIGTERM", "SIGQUIT", "SIGHUP"} do
      it("passes " .. sig .. " on, reports what finished, cleans up, and exits 128+N", function()
         local dir = h.tmpdir()
         local json, ready = dir .. "/r.json", dir .. "/ready"
         local pid, finish = background({"run", "--json=" .. json, "--", GRACEFUL, ready})
         assert.is_true(await(ready))
         psignal.kill(pid, psignal[sig])
         local code = finish()
         local r = cjson.decode(h.read_file(json))
         local n = psignal[sig]
         assert.are.equal(128 + n, code)
         assert.are.equal(sig, r.interrupted)
         if sig ~= "SIGHUP" then   -- the program handles TERM and QUIT: it ended cleanly and reported
            h.only_definite(r, 1, 123)
            h.one(r, "definite", "leak_123")
         else                      -- SIGHUP killed it: nothing to report, and it says so
            assert.are.equal(false, r.processes[1].checked)
         end
         h.rmtree(dir)
      end)
   end

   it("ends a program that outlives --timeout, reports, and exits 124", function()
      local dir = h.tmpdir()
      local r, code, err = h.ljleak_run({GRACEFUL, dir .. "/ready"}, {"--timeout=5"})
      h.rmtree(dir)
      assert.are.equal(124, code)
      assert.are.equal("timeout after 5 s", r.interrupted)
      h.only_definite(r, 1, 123)   -- it ended on the SIGTERM ljleak sent
      assert.matches("interrupted (timeout after 5 s)", err, 1, true)
   end)

   it("leaves no run directory behind", function()
      local dir = h.tmpdir()
      local tmp = h.tmpdir()
      local pid, finish = background({"run", "--", GRACEFUL, dir .. "/ready"}, {TMPDIR = tmp})
      assert.is_true(await(dir .. "/ready"))
      psignal.kill(pid, psignal.SIGTERM)
      finish()
      local left = {}
      for name in lfs.dir(tmp) do if name ~= "." and name ~= ".." then left[#left + 1] = name end end
      assert.are.same({}, left)
      h.rmtree(tmp)
      h.rmtree(dir)
   end)
end)

describe("the run directory", function()
   -- Runs a leaking program under `ljleak run --keep-run-dir` (OPTS: h.run's); returns the kept
   -- folder, after checking the report and the raw report in it.
   local function kept(prefix_argv, opts)
      local argv = {}
      for _, a in ipairs(prefix_argv) do argv[#argv + 1] = a end
      for _, a in ipairs({h.BIN, "run", "--keep-run-dir", "--", "luajit", "t/leak/malloc_dropped.lua"}) do
         argv[#argv + 1] = a
      end
      local code, _, err = h.run(argv, opts)
      assert.are.equal(42, code, err)
      assert.matches("definite: 100 bytes in 1 block,", err, 1, true)
      local dir = assert(err:match("run directory kept: (%S+)"), err)
      local raws = 0
      for name in lfs.dir(dir) do
         if name:match("^proc%.%d+%.raw$") then raws = raws + 1 end
      end
      assert.are.equal(1, raws)
      h.rmtree(dir)
      return dir
   end

   it("is in /dev/shm without TMPDIR when it has 1 GiB free, else in /tmp; in TMPDIR when set", function()
      local ok, fs = pcall(function() return require("posix.sys.statvfs").statvfs("/dev/shm") end)
      local shm = ok and fs and fs.f_bavail * fs.f_frsize >= 2 ^ 30 and unistd.access("/dev/shm", "wx") == 0
      local dir = kept({}, {env = {TMPDIR = false}})
      assert.matches(shm and "^/dev/shm/ljleak%.%w+$" or "^/tmp/ljleak%.%w+$", dir)
      local tmp = h.tmpdir()
      dir = kept({}, {env = {TMPDIR = tmp}})
      assert.are.equal(tmp, dir:match("^(.*)/ljleak%.%w+$"))
      h.rmtree(tmp)
   end)

   it("is in /tmp when /dev/shm is small (a container's 64 MiB)", function()
      local probe = h.run({"unshare", "--mount", "--propagation", "private", "true"})
      if unistd.geteuid() ~= 0 or probe ~= 0 then
         pending("needs root and unshare(1) to mount a small /dev/shm")
         return
      end
      local dir = kept({"unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs -o size=64m ljleak-spec /dev/shm && exec "$@"', "sh"},
                       {env = {TMPDIR = false}})
      assert.matches("^/tmp/ljleak%.%w+$", dir)
   end)
end)

describe("processes that become another user", function()
   local nginx = require "t.nginx"
   it("deliver their report: nginx master and worker running as nobody, no env line", function()
      if unistd.geteuid() ~= 0 or not nginx.available() then
         pending("needs root and Debian's nginx with the Lua module")
         return
      end
      local r, code, err = nginx.run(nil, {"/leak", "/leak", "/leak"}, {mode = "workers"})
      assert.is_truthy(r, err)
      assert.are.equal(42, code)
      assert.are.equal(2, #r.processes)   -- the master and the worker
      h.only_definite(r, 3, 963)
      local worker = r.processes[1].ppid == r.processes[2].pid and r.processes[1] or r.processes[2]
      local lost = {}   -- (nginx's own PCRE2 context, suppressed, is lost in both processes)
      for _, rec in ipairs(h.records(r, "definite")) do
         if not require("ljleak.model").is_suppressed(rec) then lost[#lost + 1] = rec.pid end
      end
      assert.are.same({worker.pid}, lost)   -- the worker's, written as nobody
   end)
end)
