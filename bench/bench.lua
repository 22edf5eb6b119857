-- `make bench`: each workload under plain luajit, under `ljleak run` (tracker; and "+api": with the
-- program loading ljleak's Lua API, which wraps ffi.gc), under plain
-- Valgrind memcheck (the JIT on, as people run it) and under `ljleak run --engine=valgrind` (its
-- default: the JIT off; and "vg-jit-on", with --jit=on), side by side in one run, interleaved;
-- prints median wall time, peak RSS of the program under test, and the ratios to plain.
-- Then the report step at scale: `ljleak run --json` on t/leak/stacks, a C program whose every
-- leaked block has its own stack (1e4 stacks; 1e5 stacks of 64 frames), with the whole command's
-- wall time and peak RSS. Then `ljleak test-nginx` on the suites of t/testnginx/ (12 nginx
-- instances) against the same `prove` alone.
-- Environment: BENCH_RUNS (default 3), BENCH_VALGRIND_RUNS (default 1: a Valgrind run takes
-- 20 to 100 times as long), BENCH_VALGRIND=0 to skip Valgrind, BENCH_ONLY=name (a workload,
-- "report" or "testnginx").
local stdlib = require "posix.stdlib"
local time = require "posix.time"
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"

local source = debug.getinfo(1, "S").source:sub(2)
local ROOT = stdlib.realpath((source:match("^(.*)/[^/]*$") or ".") .. "/..")
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 3
local VALGRIND = os.getenv("BENCH_VALGRIND") ~= "0"
local VALGRIND_RUNS = tonumber(os.getenv("BENCH_VALGRIND_RUNS")) or 1

local WORKLOADS = {
   {name = "malloc_free", what = "(a) 7M ffi.C.malloc/free, 16-4096 B"},
   {name = "ffi_gc", what = "(b) 3M ffi.gc(malloc, free) + collectgarbage"},
   {name = "mix", what = "(c) strings, tables, ffi.new, strdup/free"},
}

local function now()
   local t = time.clock_gettime(time.CLOCK_MONOTONIC)
   return t.tv_sec + t.tv_nsec * 1e-9
end

-- Runs argv with stdout/stderr to /dev/null; returns wall seconds and exit code.
local function run(argv)
   local t0 = now()
   local pid = assert(unistd.fork())
   if pid == 0 then
      local fcntl = require "posix.fcntl"
      local null = fcntl.open("/dev/null", fcntl.O_WRONLY)
      unistd.dup2(null, 1)
      unistd.dup2(null, 2)
      local t = {[0] = argv[1]}
      for i = 2, #argv do t[i - 1] = argv[i] end
      unistd.execp(argv[1], t)
      unistd._exit(127)
   end
   local _, how, status = wait.wait(pid)
   return now() - t0, how == "exited" and status or 128 + status
end

-- Peak RSS (KiB) of the measured program, from GNU time's -o file.
-- GNU time's "%e %M": the measured program's own wall seconds and peak RSS (KiB).
-- (After "Command exited with non-zero status N", when it did.)
local function measured_result(file)
   local f = io.open(file)
   if not f then return nil end
   local secs, kb
   for line in f:lines() do
      local s, k = line:match("^(%S+) (%d+)$")
      if s then secs, kb = s, k end
   end
   f:close()
   os.remove(file)
   return tonumber(secs), tonumber(kb)
end

local function median(t)
   table.sort(t)
   local n = #t
   if n == 0 then return nil end
   return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

local rssfile = os.tmpname()
local function measured(prog)
   return {"/usr/bin/time", "-f", "%e %M", "-o", rssfile, "luajit", prog}
end

local ENGINES = {
   {name = "plain", argv = function(prog) return measured(prog) end},
   {name = "tracker", argv = function(prog)
      local a = {ROOT .. "/bin/ljleak", "run", "--"}
      for _, x in ipairs(measured(prog)) do a[#a + 1] = x end
      return a
   end},
   -- The program loads the Lua API itself (require "ljleak"): ffi.gc is wrapped by the registry.
   {name = "+api", argv = function(prog)
      local a = {ROOT .. "/bin/ljleak", "run", "--"}
      for _, x in ipairs(measured(prog)) do a[#a + 1] = x end
      table.insert(a, #a, "-e")
      table.insert(a, #a, "require 'ljleak'")
      return a
   end},
}
if VALGRIND then
   ENGINES[#ENGINES + 1] = {name = "valgrind", runs = VALGRIND_RUNS, argv = function(prog)
      return {"/usr/bin/time", "-f", "%e %M", "-o", rssfile, "valgrind", "--tool=memcheck",
              "--leak-check=full", "-q", "luajit", prog}
   end}
   -- GNU time outside: its %M is then the largest of ljleak and the process Valgrind runs in.
   ENGINES[#ENGINES + 1] = {name = "vg-engine", runs = VALGRIND_RUNS, argv = function(prog)
      return {"/usr/bin/time", "-f", "%e %M", "-o", rssfile, ROOT .. "/bin/ljleak", "run",
              "--engine=valgrind", "--", "luajit", prog}
   end}
   -- The same with the JIT on: what --jit=on costs or saves under Valgrind.
   ENGINES[#ENGINES + 1] = {name = "vg-jit-on", runs = VALGRIND_RUNS, argv = function(prog)
      return {"/usr/bin/time", "-f", "%e %M", "-o", rssfile, ROOT .. "/bin/ljleak", "run",
              "--engine=valgrind", "--jit=on", "--", "luajit", prog}
   end}
end

local ONLY = os.getenv("BENCH_ONLY")
if not ONLY or (ONLY ~= "report" and ONLY ~= "testnginx") then
   print(("ljleak bench: %d runs each (Valgrind: %d), median wall time and peak RSS of the program under test")
      :format(RUNS, VALGRIND_RUNS))
   print("wall: the whole command (ljleak's own work included); prog: the program under test alone")
   print(("%-13s %-9s %8s %8s %9s %8s %8s %8s"):format("workload", "engine", "wall s", "prog s", "peak MiB",
      "x wall", "x prog", "x RSS"))
end
for _, w in ipairs(WORKLOADS) do
   if not ONLY or ONLY == w.name then
      local prog = ROOT .. "/bench/" .. w.name .. ".lua"
      local res = {}
      for _, e in ipairs(ENGINES) do res[e.name] = {wall = {}, prog = {}, rss = {}} end
      for i = 1, RUNS do
         for _, e in ipairs(ENGINES) do
            if i > (e.runs or RUNS) then goto next_engine end
            local wall, code = run(e.argv(prog))
            local prog_secs, rss = measured_result(rssfile)
            if code ~= 0 then
               io.stderr:write(("bench: %s under %s exited with %d\n"):format(w.name, e.name, code))
            end
            table.insert(res[e.name].wall, wall)
            if rss then table.insert(res[e.name].rss, rss) end
            if prog_secs then table.insert(res[e.name].prog, prog_secs) end
            ::next_engine::
         end
      end
      print(w.what)
      local pw, pp, pr = median(res.plain.wall), median(res.plain.prog), median(res.plain.rss)
      for _, e in ipairs(ENGINES) do
         local mw, mp, mr = median(res[e.name].wall), median(res[e.name].prog), median(res[e.name].rss)
         print(("%-13s %-9s %8.2f %8.2f %9.1f %7.2fx %7.2fx %7.2fx"):format(w.name, e.name, mw, mp or 0,
            (mr or 0) / 1024, mw / pw, (mp or 0) / (pp or 1), (mr or 0) / (pr or 1)))
      end
   end
end

-- The report step: reading, symbolizing, merging and writing N records of distinct stacks.
local REPORTS = {
   {n = 10000, pad = 0, depth = 16, what = "(d) report step: 1e4 distinct stacks, 16 frames each"},
   {n = 100000, pad = 60, depth = 64, what = "(e) report step: 1e5 distinct stacks, 64 frames each"},
}
if not ONLY or ONLY == "report" then
   local stacks = ROOT .. "/build/t/leak/stacks"
   local json = os.tmpname()
   print(("report step: `ljleak run --json` of t/leak/stacks, %d runs each, median wall time and peak RSS of "
      .. "the whole command"):format(RUNS))
   print(("%-13s %8s %9s %9s"):format("records", "wall s", "peak MiB", "JSON MiB"))
   for _, r in ipairs(REPORTS) do
      local wall, rss = {}, {}
      for _ = 1, RUNS do
         -- GNU time outside: %M is the largest of ljleak and the program.
         local secs, code = run({"/usr/bin/time", "-f", "%e %M", "-o", rssfile, "env", "LJLEAK_DEPTH=" .. r.depth,
                                 ROOT .. "/bin/ljleak", "run", "--json=" .. json, "--", stacks,
                                 tostring(r.n), tostring(r.pad)})
         local _, kb = measured_result(rssfile)
         if code ~= 42 then io.stderr:write(("bench: stacks %d exited with %d, not 42\n"):format(r.n, code)) end
         table.insert(wall, secs)
         if kb then table.insert(rss, kb) end
      end
      local f = io.open(json, "rb")
      local size = f and f:seek("end") or 0
      if f then f:close() end
      print(r.what)
      print(("%-13d %8.2f %9.1f %9.1f"):format(r.n, median(wall), (median(rss) or 0) / 1024, size / 2^20))
   end
   os.remove(json)
end

-- test-nginx: the Test::Nginx-like suites of t/testnginx/ (12 nginx instances, each started and
-- stopped), under prove alone in Test::Nginx's own mode (nginx daemonized), under prove in the mode
-- ljleak uses (a non-numeric TEST_NGINX_USE_VALGRIND: `daemon off`, nginx run by `valgrind` from
-- PATH; here a pass-through one, so nothing checks it), and under `ljleak test-nginx`.
if (not ONLY or ONLY == "testnginx") and unistd.access("/usr/lib/nginx/modules/ngx_http_lua_module.so", "r") == 0 then
   local tmp = assert(stdlib.mkdtemp("/tmp/ljleak-bench-XXXXXX"))
   local f = assert(io.open(tmp .. "/valgrind", "w"))
   f:write('#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done\nexec "$@"\n')
   f:close()
   require("posix.sys.stat").chmod(tmp .. "/valgrind", tonumber("755", 8))
   local files = {"t/testnginx/leaky.t", "t/testnginx/phases.t", "t/testnginx/jit.t", "t/testnginx/clean.t"}
   local function suite(prefix, runs)
      return {runs = runs, argv = function()
         local a = {"env", "TEST_NGINX_SERVROOT=" .. tmp .. "/servroot", "TEST_NGINX_PORT=19849",
                    "TEST_NGINX_LOAD_MODULES=/usr/lib/nginx/modules/ndk_http_module.so "
                    .. "/usr/lib/nginx/modules/ngx_http_lua_module.so"}
         for _, x in ipairs(prefix) do a[#a + 1] = x end
         a[#a + 1] = "prove"
         for _, x in ipairs(files) do a[#a + 1] = ROOT .. "/" .. x end
         return a
      end}
   end
   local rows = {
      {"prove", suite({})},
      {"prove vg-mode", suite({"PATH=" .. tmp .. ":" .. os.getenv("PATH"), "TEST_NGINX_USE_VALGRIND=--pass"})},
      {"test-nginx", suite({ROOT .. "/bin/ljleak", "test-nginx", "--"})},
   }
   if VALGRIND then
      rows[#rows + 1] = {"tn valgrind", suite({ROOT .. "/bin/ljleak", "test-nginx", "--engine=valgrind", "--"},
                                               VALGRIND_RUNS)}
   end
   local walls = {}
   for i = 1, RUNS do
      for _, r in ipairs(rows) do
         if i <= (r[2].runs or RUNS) then
            local wall, code = run(r[2].argv())
            if code ~= 0 and code ~= 42 then io.stderr:write(("bench: %s exited with %d\n"):format(r[1], code)) end
            walls[r[1]] = walls[r[1]] or {}
            table.insert(walls[r[1]], wall)
         end
      end
   end
   print(("test-nginx: prove on t/testnginx/ (12 nginx instances), %d runs each, median wall time"):format(RUNS))
   print(("%-15s %8s %10s %16s"):format("command", "wall s", "x prove", "x prove vg-mode"))
   local base, vgmode = median(walls.prove), median(walls["prove vg-mode"])
   for _, r in ipairs(rows) do
      local m = median(walls[r[1]])
      print(("%-15s %8.2f %9.2fx %15.2fx"):format(r[1], m, m / base, m / vgmode))
   end
   run({"rm", "-rf", "--", tmp})
end
os.remove(rssfile)
