-- `make bench`: each workload under plain luajit, under `ljleak run` (tracker; and "+api": with the
-- program loading ljleak's Lua API, which wraps ffi.gc), under plain
-- Valgrind memcheck (the JIT on, as people run it) and under `ljleak run --engine=valgrind` (its
-- default: the JIT off; and "vg-jit-on", with --jit=on), side by side in one run, interleaved;
-- prints the least wall time of the runs, peak RSS of the program under test, and the ratios to plain.
-- Then the report step at scale: `ljleak run --json` on t/leak/stacks, a C program whose every
-- leaked block has its own stack (1e4 stacks; 1e5 stacks of 64 frames), with the whole command's
-- wall time and peak RSS. Then `ljleak test-nginx` on the suites of t/testnginx/ (12 nginx
-- instances) against the same `prove` alone. Then issue 11's rows: the fixed cost of a run, 20
-- short processes, the exit scan's curve (1e4..1e7 live blocks), a 300-test busted suite (those
-- two beside an empty library preloaded, an exit check's file I/O alone and the tracker with
-- ljleak's bootstrap alone in the processes); and a table of every target with its measured
-- ratio. LeakSanitizer (gcc's liblsan preloaded) and heaptrack are columns of the workloads where
-- they are installed.
-- Environment: BENCH_RUNS (default 5), BENCH_VALGRIND_RUNS (default 1: a Valgrind run takes
-- 20 to 100 times as long), BENCH_VALGRIND=0 to skip Valgrind, BENCH_PEER_RUNS (LSan and
-- heaptrack, default 1), BENCH_SCAN_MAX (default 1e7), BENCH_ONLY=name (a workload, "report",
-- "testnginx", "fixed", "workers", "scan" or "busted").
local cjson = require "cjson"
local stdlib = require "posix.stdlib"
local time = require "posix.time"
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"

local source = debug.getinfo(1, "S").source:sub(2)
local ROOT = stdlib.realpath((source:match("^(.*)/[^/]*$") or ".") .. "/..")
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 5
local VALGRIND = os.getenv("BENCH_VALGRIND") ~= "0"
local VALGRIND_RUNS = tonumber(os.getenv("BENCH_VALGRIND_RUNS")) or 1

local WORKLOADS = {
   {name = "malloc_free", what = "(a) 7M ffi.C.malloc/free, 16-4096 B"},
   {name = "ffi_gc", what = "(b) 3M ffi.gc(malloc, free) + collectgarbage"},
   {name = "mix", what = "(c) strings, tables, ffi.new, strdup/free"},
   {name = "tight", what = "(t) 3e7 malloc/free pairs, 1-512 B, one compiled loop", valgrind = false},
}
local PEER_RUNS = tonumber(os.getenv("BENCH_PEER_RUNS")) or 1

-- The targets (issue 11), each {what, measured ratio or value, target, unit}: printed at the end.
local targets = {}
local function target(what, value, limit, unit)
   targets[#targets + 1] = {what, value, limit, unit or "x"}
end

local function now()
   local t = time.clock_gettime(time.CLOCK_MONOTONIC)
   return t.tv_sec + t.tv_nsec * 1e-9
end

-- Runs argv with stdout/stderr to /dev/null (and ENV's variables set, if given); returns wall
-- seconds and exit code.
local function run(argv, env)
   local t0 = now()
   local pid = assert(unistd.fork())
   if pid == 0 then
      local fcntl = require "posix.fcntl"
      local null = fcntl.open("/dev/null", fcntl.O_WRONLY)
      unistd.dup2(null, 1)
      unistd.dup2(null, 2)
      for k, v in pairs(env or {}) do stdlib.setenv(k, v) end
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

-- The least of a command's runs: on a shared machine the noise only adds (other work, a
-- neighbour's steal time: back-to-back runs of one command differ by 20% and more), so the least
-- is the best estimate of the command's own cost, and the ratios compare least to least.
local function least(t)
   table.sort(t)
   return t[1]
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

-- The peers, where installed: LeakSanitizer's runtime preloaded (its leak check at exit, exit code
-- kept 0), heaptrack (recording; its analysis is a separate step). GNU time outside: the whole
-- command's time, and the largest RSS of its processes.
local function installed(path) return unistd.access(path, "r") == 0 end
local LSAN
for _, dir in ipairs({"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"}) do
   if not LSAN and installed(dir .. "/liblsan.so.0") then LSAN = dir .. "/liblsan.so.0" end
end
local HEAPTRACK = installed("/usr/bin/heaptrack") and "/usr/bin/heaptrack" or nil
local peer_out = os.tmpname()
if LSAN then
   ENGINES[#ENGINES + 1] = {name = "lsan", runs = PEER_RUNS, peer = true, argv = function(prog)
      return {"/usr/bin/time", "-f", "%e %M", "-o", rssfile, "env", "LD_PRELOAD=" .. LSAN,
              "LSAN_OPTIONS=exitcode=0", "luajit", prog}
   end}
end
if HEAPTRACK then
   ENGINES[#ENGINES + 1] = {name = "heaptrack", runs = PEER_RUNS, peer = true, argv = function(prog)
      return {"/usr/bin/time", "-f", "%e %M", "-o", rssfile, HEAPTRACK, "-o", peer_out, "luajit", prog}
   end}
end

local ONLY = os.getenv("BENCH_ONLY")
local WORKLOAD_NAMES = {}
for _, w in ipairs(WORKLOADS) do WORKLOAD_NAMES[w.name] = true end
if not ONLY or WORKLOAD_NAMES[ONLY] then
   print(("ljleak bench: %d runs each (Valgrind: %d), least wall time and peak RSS of the program under test")
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
            if i > (e.runs or RUNS) or (w.valgrind == false and (e.name:match("^vg") or e.name == "valgrind")) then
               goto next_engine
            end
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
      local pw, pp, pr = least(res.plain.wall), least(res.plain.prog), least(res.plain.rss)
      for _, e in ipairs(ENGINES) do
         local mw, mp, mr = least(res[e.name].wall), least(res[e.name].prog), least(res[e.name].rss)
         -- (the peers: GNU time is outside, its "prog" the whole command)
         if mw then
            print(("%-13s %-9s %8.2f %8.2f %9.1f %7.2fx %7.2fx %7.2fx"):format(w.name, e.name, mw, mp or 0,
               (mr or 0) / 1024, mw / pw, (mp or 0) / (pp or 1), (mr or 0) / (pr or 1)))
         end
      end
      local t = res.tracker
      if w.name == "tight" then
         target("tightest loop: tracker, program", least(t.prog) / pp, 1.5)
      else
         target(w.name .. ": tracker, program", least(t.prog) / pp, 1.1)
         target(w.name .. ": tracker, whole command", least(t.wall) / pw, 1.2)
         target(w.name .. ": tracker, peak RSS", least(t.rss) / pr, 1.3)
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
   print(("report step: `ljleak run --json` of t/leak/stacks, %d runs each, least wall time and peak RSS of "
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
      print(("%-13d %8.2f %9.1f %9.1f"):format(r.n, least(wall), (least(rss) or 0) / 1024, size / 2^20))
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
   print(("test-nginx: prove on t/testnginx/ (12 nginx instances), %d runs each, least wall time"):format(RUNS))
   print(("%-15s %8s %10s %16s"):format("command", "wall s", "x prove", "x prove vg-mode"))
   local base, vgmode = least(walls.prove), least(walls["prove vg-mode"])
   for _, r in ipairs(rows) do
      local m = least(walls[r[1]])
      print(("%-15s %8.2f %9.2fx %15.2fx"):format(r[1], m, m / base, m / vgmode))
   end
   run({"rm", "-rf", "--", tmp})
end

-- Runs ARGV RUNS times under GNU time (outside: the whole command); least wall and peak RSS (KiB).
local function timed(argv, runs, codes, env)
   local walls, rsss = {}, {}
   for _ = 1, runs do
      local a = {"/usr/bin/time", "-f", "%e %M", "-o", rssfile}
      for _, x in ipairs(argv) do a[#a + 1] = x end
      local wall, code = run(a, env)
      local _, kb = measured_result(rssfile)
      if not (codes or {[0] = true})[code] then
         io.stderr:write(("bench: %s exited with %d\n"):format(table.concat(argv, " "), code))
      end
      walls[#walls + 1], rsss[#rsss + 1] = wall, kb
   end
   return least(walls), least(rsss)
end

local LJLEAK = ROOT .. "/bin/ljleak"
local cache = assert(stdlib.mkdtemp("/tmp/ljleak-bench-cache-XXXXXX"))
stdlib.setenv("LJLEAK_CACHE", cache)

-- Fixed cost: a program that leaks 10 bytes, plain and under `ljleak run` (the symbolizer's disk
-- cache cold in the first run, warm after).
if not ONLY or ONLY == "fixed" then
   local prog = {"luajit", "-e", "local ffi = require 'ffi' ffi.cdef 'void *malloc(size_t);' ffi.C.malloc(10)"}
   local under = {LJLEAK, "run", "--"}
   for _, x in ipairs(prog) do under[#under + 1] = x end
   local cold_w, cold_r = timed(under, 1, {[42] = true})
   local runs = math.max(RUNS, 10)
   local walls, rsss = {plain = {}, under = {}}, {plain = {}, under = {}}
   for _ = 1, runs do   -- interleaved
      local w, r = timed(prog, 1)
      table.insert(walls.plain, w)
      table.insert(rsss.plain, r)
      w, r = timed(under, 1, {[42] = true})
      table.insert(walls.under, w)
      table.insert(rsss.under, r)
   end
   local pw, pr, tw, tr = least(walls.plain), least(rsss.plain), least(walls.under), least(rsss.under)
   print(("fixed cost: `ljleak run -- luajit -e <malloc(10)>`, least of %d runs, whole command"):format(runs))
   print(("%-22s %8s %9s"):format("command", "wall s", "peak MiB"))
   print(("%-22s %8.3f %9.1f"):format("plain", pw, pr / 1024))
   print(("%-22s %8.3f %9.1f"):format("ljleak run (cold)", cold_w, cold_r / 1024))
   print(("%-22s %8.3f %9.1f"):format("ljleak run (warm)", tw, tr / 1024))
   target("fixed cost: time over plain", tw - pw, 0.05, "s")
   target("fixed cost: memory over plain", (tr - pr) / 1024, 16, "MiB")
end

-- What the whole command's time is made of, measured beside it (interleaved, in one loop): an
-- empty library preloaded (what preloading any library costs), a library that does only the I/O
-- of a per-process exit check (FLOOR_C below: the floor of this design), the tracker preloaded
-- into the command's processes alone (their raw reports written into a scratch run directory: no
-- CLI; ENV adds ljleak's bootstrap, BOOT). PLAIN: the command's argv; WHOLE: {label, argv, exit
-- codes} of it under ljleak. Prints each row's least wall time and its ratio to plain's; returns
-- plain's and WHOLE's. The scratch run directory is where the CLI puts its own: /dev/shm.
local scratch = assert(stdlib.mkdtemp("/tmp/ljleak-bench-scratch-XXXXXX"))
local EMPTY_SO, FLOOR_SO = scratch .. "/empty.so", scratch .. "/floor.so"
local _, cc_code = run({"cc", "-shared", "-fPIC", "-o", EMPTY_SO, "-x", "c", "/dev/null"})
local has_empty = cc_code == 0 and unistd.access(EMPTY_SO, "r") == 0
-- What any exit check that writes a report per process does, and nothing else: its executable's
-- path read at start and its report file made there (proc.PID.live, also in a forked child), at
-- exit /proc/self/maps and /proc/self/cmdline read, the report written and renamed proc.PID.raw.
local FLOOR_C = [[
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static char live[4096], fin[4096];
static void mark(void) {
  const char *d = getenv("LJLEAK_DIR");
  int fd;
  live[0] = 0;
  if (!d) return;
  snprintf(live, sizeof live, "%s/proc.%d.live", d, (int)getpid());
  snprintf(fin, sizeof fin, "%s/proc.%d.raw", d, (int)getpid());
  if ((fd = open(live, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) >= 0) close(fd);
}
static void check(void) {
  static char buf[65536];
  ssize_t n, got = 0;
  int fd;
  if (!live[0]) return;
  if ((fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)) >= 0) {
    while (got < (ssize_t)sizeof buf && (n = read(fd, buf + got, sizeof buf - got)) > 0) got += n;
    close(fd);
  }
  if ((fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC)) >= 0) {
    if (read(fd, buf, 4096) < 0) got = 0;
    close(fd);
  }
  if ((fd = open(live, O_WRONLY | O_CLOEXEC)) >= 0) {
    if (write(fd, buf, got < 1024 ? (size_t)got : 1024) >= 0) rename(live, fin);
    close(fd);
  }
}
__attribute__((constructor)) static void init(void) {
  char exe[4096];
  if (readlink("/proc/self/exe", exe, sizeof exe) < 0) return;
  mark();
  pthread_atfork(NULL, NULL, mark);
  atexit(check);
}
]]
local floor_c = scratch .. "/floor.c"
local f_c = assert(io.open(floor_c, "w"))
f_c:write(FLOOR_C)
f_c:close()
_, cc_code = run({"cc", "-O2", "-shared", "-fPIC", "-o", FLOOR_SO, floor_c})
local has_floor = cc_code == 0 and unistd.access(FLOOR_SO, "r") == 0
local SHM = unistd.access("/dev/shm", "wx") == 0 and "/dev/shm" or scratch
local RUN_DIR = ("%s/ljleak-bench-run.%d"):format(SHM, unistd.getpid())

-- ljleak's bootstrap as the CLI gives every LuaJIT process (LUA_INIT, with the modules' bytecode),
-- for the rows of the processes alone.
local BOOT = ("local boot = loadfile(%q) if boot then boot(%q, %q) end"):format(
   ROOT .. "/build/lua/ljleak/engine/boot.lua", ROOT .. "/build/lua", ROOT .. "/build/ljleak/core.so")

local function with_parts(plain, whole, runs, env)
   local tracker_env = {LD_PRELOAD = ROOT .. "/build/ljleak/libljleak.so", LJLEAK_DIR = RUN_DIR}
   local floor_env = {LD_PRELOAD = FLOOR_SO, LJLEAK_DIR = RUN_DIR}
   for k, v in pairs(env) do tracker_env[k] = v end
   local rows = {{"plain", plain}}
   if has_empty then rows[#rows + 1] = {"an empty library preloaded", plain, nil, {LD_PRELOAD = EMPTY_SO}} end
   if has_floor then rows[#rows + 1] = {"an exit check's file I/O alone", plain, nil, floor_env} end
   rows[#rows + 1] = {"the tracker and bootstrap alone", plain, nil, tracker_env}
   rows[#rows + 1] = whole
   local walls = {}
   for _ = 1, runs do
      for i, r in ipairs(rows) do
         local dir = r[4] and r[4].LJLEAK_DIR
         if dir then assert(require("lfs").mkdir(dir)) end
         walls[i] = walls[i] or {}
         walls[i][#walls[i] + 1] = timed(r[2], 1, r[3], r[4])
         if dir then run({"rm", "-rf", "--", dir}) end
      end
   end
   local pw = least(walls[1])
   print(("%-34s %8s %8s"):format("command", "wall s", "x wall"))
   for i, r in ipairs(rows) do
      local w = least(walls[i])
      print(("%-34s %8.3f %7.2fx"):format(r[1], w, w / pw))
   end
   return pw, least(walls[#rows])
end

-- Per process: a script starting 20 short LuaJIT workers (bench/workers.lua), the whole command.
if not ONLY or ONLY == "workers" then
   local prog = {"luajit", ROOT .. "/bench/workers.lua"}
   local runs = math.max(RUNS, 10)   -- (0.05 s each)
   print(("per process: 20 short luajit workers (bench/workers.lua: 41 processes), %d runs each, least wall time")
      :format(runs))
   local pw, tw = with_parts(prog, {"ljleak run", {LJLEAK, "run", "--", prog[1], prog[2]}, {[42] = true}}, runs,
                             {LUA_INIT = BOOT})
   target("20 processes: whole command", tw / pw, 1.3)
end

-- The exit scan: N live blocks at exit (bench/live_blocks.lua), the program with the tracker
-- preloaded alone (its exit check's own time: the raw report's scan_us), and the whole
-- `ljleak run --json` (the report step: reading and building the few records).
if not ONLY or ONLY == "scan" then
   local max = tonumber(os.getenv("BENCH_SCAN_MAX")) or 1e7
   local lib = ROOT .. "/build/ljleak/libljleak.so"
   local json = os.tmpname()
   print("exit scan: N blocks live at exit (bench/live_blocks.lua), one run each; plain and preloaded: the "
      .. "program alone; scan: the exit check (scan_us); run: the whole `ljleak run --json`")
   print(("%-9s %8s %9s %8s %9s %9s %8s %9s %8s %8s"):format("blocks", "plain s", "plain MiB", "preload",
      "prel MiB", "scan s", "ns/block", "run s", "run MiB", "records"))
   local n = 1e4
   while n <= max do
      local prog = {"luajit", ROOT .. "/bench/live_blocks.lua", ("%d"):format(n)}
      local pw, pr = timed(prog, 1)
      local dir = assert(stdlib.mkdtemp("/tmp/ljleak-bench-scan-XXXXXX"))
      local lw, lr = timed({"env", "LD_PRELOAD=" .. lib, "LJLEAK_DIR=" .. dir, prog[1], prog[2], prog[3]}, 1)
      local scan_us
      for name in require("lfs").dir(dir) do
         local f = name:match("%.raw$") and io.open(dir .. "/" .. name)
         if f then
            scan_us = tonumber(f:read("*a"):match("\nstats [^\n]*scan_us=(%d+)"))
            f:close()
         end
      end
      run({"rm", "-rf", "--", dir})
      local rw, rr = timed({LJLEAK, "run", "--json=" .. json, "--", prog[1], prog[2], prog[3]}, 1, {[42] = true})
      local f = io.open(json)
      local ok, report = pcall(cjson.decode, f and f:read("*a") or "")
      if f then f:close() end
      local records = ok and #report.leaks or -1
      print(("%-9d %8.2f %9.1f %8.2f %9.1f %9.3f %8.1f %9.2f %8.1f %8d"):format(n, pw, pr / 1024, lw, lr / 1024,
         (scan_us or 0) / 1e6, (scan_us or 0) * 1e3 / n, rw, rr / 1024, records))
      n = n * 10
   end
   os.remove(json)
end

-- busted: a generated suite of 300 tests (pure Lua, ffi.gc'd malloc garbage, malloc/free), plain
-- busted against `ljleak busted` (per-test checks on).
if not ONLY or ONLY == "busted" then
   local dir = assert(stdlib.mkdtemp("/tmp/ljleak-bench-busted-XXXXXX"))
   local f = assert(io.open(dir .. "/suite_spec.lua", "w"))
   f:write("local ffi = require 'ffi'\nffi.cdef 'void *malloc(size_t); void free(void *);'\nlocal C = ffi.C\n",
           "describe('suite', function()\n")
   for i = 1, 100 do
      f:write(("  it('strings and tables %d', function() local t = {} for j = 1, 50 do t[j] = ('x'):rep(j) end "
         .. "assert.are.equal(50, #t) end)\n"):format(i))
      f:write(("  it('ffi.gc garbage %d', function() for j = 1, 5 do ffi.gc(C.malloc(j * 16), C.free) end end)\n")
         :format(i))
      f:write(("  it('malloc and free %d', function() local p = C.malloc(%d) assert.is_not_nil(p) C.free(p) end)\n")
         :format(i, i))
   end
   f:write("end)\n")
   f:close()
   local spec = dir .. "/suite_spec.lua"
   local runs = math.max(RUNS, 10)
   print(("busted: a 300-test suite, per-test checks on, %d runs each, least wall time"):format(runs))
   local pw, lw = with_parts({"luajit", "/usr/bin/busted", "-o", "TAP", spec},
                             {"ljleak busted", {LJLEAK, "busted", "--", "-o", "TAP", spec}}, runs,
                             {LUA_INIT = BOOT, LJLEAK_PER_TEST = "1"})
   target("busted, 300 tests: whole command", lw / pw, 1.3)
   run({"rm", "-rf", "--", dir})
end
run({"rm", "-rf", "--", cache})
run({"rm", "-rf", "--", scratch})

if #targets > 0 then
   print("issue 11's targets (measured in this run)")
   print(("%-38s %10s %10s  %s"):format("target", "measured", "limit", "met"))
   for _, t in ipairs(targets) do
      print(("%-38s %9.3f%s %9.3f%s  %s"):format(t[1], t[2], t[4], t[3], t[4], t[2] <= t[3] and "yes" or "NO"))
   end
end
os.remove(rssfile)
for _, suffix in ipairs({"", ".zst", ".gz"}) do os.remove(peer_out .. suffix) end
