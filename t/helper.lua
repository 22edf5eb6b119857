-- Shared by the busted specs: run real programs (argv arrays, no shell) and read ljleak's JSON.
local cjson = require "cjson"
local luassert = require "luassert"
local fcntl = require "posix.fcntl"
local stdlib = require "posix.stdlib"
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"

local M = {}

local source = debug.getinfo(1, "S").source:sub(2)
M.ROOT = stdlib.realpath((source:match("^(.*)/[^/]*$") or ".") .. "/..")
M.BIN = M.ROOT .. "/bin/ljleak"
package.path = M.ROOT .. "/lua/?.lua;" .. M.ROOT .. "/lua/?/init.lua;" .. package.path
package.cpath = M.ROOT .. "/build/?.so;" .. package.cpath

-- LJLEAK_TEST_BUILD=build/clang: run the specs on another build of the checkout (`make clang`),
-- through a tree whose build/ is that one (bin, lua and t are the checkout's own).
local other_build = os.getenv("LJLEAK_TEST_BUILD")
if other_build and other_build ~= "" then
   local tree = assert(stdlib.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/ljleak-build-XXXXXX"))
   -- (bin/ a folder of its own: the launcher finds lua/ and build/ beside the folder it is in)
   assert(require("lfs").mkdir(tree .. "/bin"))
   assert(unistd.link(M.ROOT .. "/bin/ljleak", tree .. "/bin/ljleak", true))
   for _, name in ipairs({"lua", "t", "suppressions"}) do
      assert(unistd.link(M.ROOT .. "/" .. name, tree .. "/" .. name, true))
   end
   assert(unistd.link(M.ROOT .. "/" .. other_build, tree .. "/build", true))
   M.ROOT, M.BIN = tree, tree .. "/bin/ljleak"
   -- Removed when the spec's Lua state closes: its links only (never what they point to).
   M.tree_guard = newproxy(true)
   getmetatable(M.tree_guard).__gc = function()
      for _, name in ipairs({"bin/ljleak", "bin", "lua", "t", "suppressions", "build"}) do
         os.remove(tree .. "/" .. name)
      end
      os.remove(tree)
   end
end

-- The ljleak runs of the specs keep no symbolizer cache on disk (LJLEAK_CACHE=0): each looks its
-- frames up through libdw, and the user's own cache is left alone. t/symcache_spec.lua tests the
-- cache, in folders of its own.
if not os.getenv("LJLEAK_CACHE") then stdlib.setenv("LJLEAK_CACHE", "0") end

function M.read_file(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local s = f:read("*a")
   f:close()
   return s
end

function M.write_file(path, s)
   local f = assert(io.open(path, "wb"))
   f:write(s)
   f:close()
end

function M.tmpdir()
   return assert(stdlib.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/ljleak-test-XXXXXX"))
end

function M.rmtree(dir)
   local lfs = require "lfs"
   if not dir or not lfs.attributes(dir) then return end
   for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." then
         local p = dir .. "/" .. name
         if lfs.attributes(p, "mode") == "directory" then M.rmtree(p) else os.remove(p) end
      end
   end
   lfs.rmdir(dir)
end

-- Runs argv (argv[1] searched in PATH) in dir `cwd` (default: the checkout) with extra `env`.
-- Returns exit code (128+signal if killed), stdout, stderr.
function M.run(argv, opts)
   opts = opts or {}
   local dir = M.tmpdir()
   local out, err = dir .. "/stdout", dir .. "/stderr"
   local pid = assert(unistd.fork())
   if pid == 0 then
      local o = fcntl.open(out, fcntl.O_WRONLY + fcntl.O_CREAT + fcntl.O_TRUNC, 384)
      local e = fcntl.open(err, fcntl.O_WRONLY + fcntl.O_CREAT + fcntl.O_TRUNC, 384)
      unistd.dup2(o, 1)
      unistd.dup2(e, 2)
      if opts.close_fds then  -- the command starts with 0, 1 and 2 only, whatever this process has open
         for fd = 3, 1023 do unistd.close(fd) end
      end
      unistd.chdir(opts.cwd or M.ROOT)
      for k, v in pairs(opts.env or {}) do stdlib.setenv(k, v or nil) end
      local argt = {[0] = argv[1]}
      for i = 2, #argv do argt[i - 1] = argv[i] end
      unistd.execp(argv[1], argt)
      unistd._exit(127)
   end
   local _, how, status = wait.wait(pid)
   local code = how == "exited" and status or 128 + status
   local so, se = M.read_file(out), M.read_file(err)
   M.rmtree(dir)
   return code, so, se
end

-- The environment that keeps a tool the specs use (a compiler: they leak by design) out of an
-- ljleak run that checks the suite itself (make test's self-check).
M.UNTRACED = {LD_PRELOAD = false, LJLEAK_DIR = false}

-- Runs `ljleak COMMAND --json=F [extra...] -- args...` (OPTS: M.run's); returns the decoded report
-- (or nil), the exit code, stdout and stderr.
local function ljleak_json(command, args, extra, opts)
   local dir = M.tmpdir()
   local json = dir .. "/report.json"
   local argv = {M.BIN, command, "--json=" .. json}
   for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
   argv[#argv + 1] = "--"
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   local code, out, err = M.run(argv, opts)
   local text = M.read_file(json)
   M.rmtree(dir)
   return text and cjson.decode(text), code, out, err
end

-- Runs `ljleak run [extra...] --json=F -- cmd...`; returns the decoded report (or nil), the
-- exit code, stderr and stdout.
function M.ljleak_run(cmd, extra, opts)
   local report, code, out, err = ljleak_json("run", cmd, extra, opts)
   return report, code, err, out
end

-- Runs `ljleak busted --json=F [extra...] -- busted_args...`; returns the decoded report (or
-- nil), the exit code, busted's output and stderr.
function M.ljleak_busted(busted_args, extra)
   return ljleak_json("busted", busted_args, extra)
end

-- A new temporary folder holding a copy of t/ci/sites.lua (the CI specs' program, run from there
-- as `luajit sites.lua`), and the environment it needs there (where libleaky.so is).
function M.sites_dir()
   local dir = M.tmpdir()
   M.write_file(dir .. "/sites.lua", M.read_file(M.ROOT .. "/t/ci/sites.lua"))
   return dir, {LJLEAK_LEAKY_LIB = M.ROOT .. "/build/t/leak/libleaky.so"}
end

-- The fixture t/leak/NAME.lua under the tracker (opts.args: its arguments).
function M.fixture(name, extra, opts)
   local cmd = {"luajit", "t/leak/" .. name .. ".lua"}
   for _, a in ipairs(opts and opts.args or {}) do cmd[#cmd + 1] = a end
   return M.ljleak_run(cmd, extra, opts)
end

-- -- Running ljleak, several at once -----------------------------------------------------------

-- A job: `ljleak run --json=F ARGS...`, or a whole argv with `argv`; ENV added. Filled in when
-- done: code, stdout, stderr, report (decoded JSON, if written).
function M.job(args, env)
   return {args = args, env = env}
end

local function start(j)
   j.dir = M.tmpdir()
   local argv = j.argv or {M.BIN, "run", "--json=" .. j.dir .. "/report.json"}
   if not j.argv then
      for _, a in ipairs(j.args) do argv[#argv + 1] = a end
   end
   j.pid = assert(unistd.fork())
   if j.pid == 0 then
      local o = fcntl.open(j.dir .. "/stdout", fcntl.O_WRONLY + fcntl.O_CREAT + fcntl.O_TRUNC, 384)
      local e = fcntl.open(j.dir .. "/stderr", fcntl.O_WRONLY + fcntl.O_CREAT + fcntl.O_TRUNC, 384)
      unistd.dup2(o, 1)
      unistd.dup2(e, 2)
      unistd.chdir(M.ROOT)
      for k, v in pairs(j.env or {}) do stdlib.setenv(k, v) end
      local t = {[0] = argv[1]}
      for i = 2, #argv do t[i - 1] = argv[i] end
      unistd.execp(argv[1], t)
      unistd._exit(127)
   end
end

local function finish(j, how, status)
   j.code = how == "exited" and status or 128 + status
   j.stdout, j.stderr = M.read_file(j.dir .. "/stdout"), M.read_file(j.dir .. "/stderr")
   local text = M.read_file(j.dir .. "/report.json")
   j.report = text and cjson.decode(text)
   M.rmtree(j.dir)
end

-- Run every job of JOBS (a table of name -> job), at most 4 at a time.
function M.run_all(jobs)
   local queue, running, by_pid = {}, 0, {}
   for _, j in pairs(jobs) do queue[#queue + 1] = j end
   local next_job = 1
   while next_job <= #queue or running > 0 do
      while running < 4 and next_job <= #queue do
         start(queue[next_job])
         by_pid[queue[next_job].pid] = queue[next_job]
         next_job, running = next_job + 1, running + 1
      end
      local pid, how, status = wait.wait(-1)
      if by_pid[pid] then
         finish(by_pid[pid], how, status)
         running = running - 1
      end
   end
end

function M.has_function(rec, name)
   for _, f in ipairs(rec.frames or {}) do
      if f["function"] == name then return true end
   end
   return false
end

-- Records of `kind` (and whose frames name `fn`, if given).
function M.records(report, kind, fn)
   local r = {}
   for _, rec in ipairs(report.leaks) do
      if rec.kind == kind and (not fn or M.has_function(rec, fn)) then r[#r + 1] = rec end
   end
   return r
end

-- The one record of `kind` (naming `fn`, if given); fails the test if there is not exactly one.
function M.one(report, kind, fn)
   local recs = M.records(report, kind, fn)
   luassert.are.equal(1, #recs, ("expected one %s record naming %s"):format(kind, tostring(fn)))
   return recs[1]
end

-- Fails the test unless the report's definite total is exactly BLOCKS and BYTES.
function M.only_definite(report, blocks, bytes)
   luassert.are.same({blocks = blocks, bytes = bytes}, report.summary.definite)
end

-- The record of `kind` with exactly `bytes` (and allocated by `alloc_fn`, if given), or nil.
function M.record_of_size(report, kind, bytes, alloc_fn)
   for _, rec in ipairs(M.records(report, kind)) do
      if rec.bytes == bytes and (not alloc_fn or rec.frames[1]["function"] == alloc_fn) then return rec end
   end
end

-- Blocks and bytes over records of `kind` (naming `fn`, if given).
function M.total(report, kind, fn)
   local blocks, bytes = 0, 0
   for _, rec in ipairs(M.records(report, kind, fn)) do
      blocks, bytes = blocks + rec.blocks, bytes + rec.bytes
   end
   return blocks, bytes
end

-- The leaked records of REPORT (reachable ones left out) as sorted lines: kind, blocks, bytes,
-- then the words FRAMES(record) gives.
local function record_lines(report, frames)
   local lines = {}
   for _, rec in ipairs(report.leaks) do
      if rec.kind ~= "reachable" then
         local parts = {("%s %d %d |"):format(rec.kind, rec.blocks, rec.bytes)}
         for _, w in ipairs(frames(rec)) do parts[#parts + 1] = w end
         lines[#lines + 1] = table.concat(parts, " ")
      end
   end
   table.sort(lines)
   return lines
end

-- Runs each command of CMDS ({name, argv} pairs) under `ljleak run` twice, as it is and with the
-- environment REF (named REF_NAME), four at a time, and asserts that both runs give the same
-- record lines (see record_lines). Returns the lines of the first runs, all commands together.
function M.same_records(cmds, ref, ref_name, frames)
   local jobs, all = {}, {}
   for _, c in ipairs(cmds) do
      jobs[c[1] .. " own"] = M.job({"--", unpack(c[2])})
      jobs[c[1] .. " " .. ref_name] = M.job({"--", unpack(c[2])}, ref)
   end
   M.run_all(jobs)
   for _, c in ipairs(cmds) do
      local mine, theirs = jobs[c[1] .. " own"], jobs[c[1] .. " " .. ref_name]
      luassert.is_truthy(mine.report, c[1] .. " own: " .. tostring(mine.stderr))
      luassert.is_truthy(theirs.report, c[1] .. " " .. ref_name .. ": " .. tostring(theirs.stderr))
      local lines = record_lines(mine.report, frames)
      luassert.are.same(record_lines(theirs.report, frames), lines, c[1])
      for _, l in ipairs(lines) do all[#all + 1] = l end
   end
   return all
end

return M
