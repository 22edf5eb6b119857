-- The tracker engine (libljleak.so preloaded into every process of the command): the command's
-- environment, waiting for processes that outlive it, and its run directory read back
-- (doc/raw-format.md): the processes' raw reports, their errors, and who was not checked.
local cjson = require "cjson"
local lfs = require "lfs"
local psignal = require "posix.signal"

local const = require "ljleak.const"
local engines = require "ljleak.engine"
local preflight = require "ljleak.preflight"
local process = require "ljleak.process"
local progress = require "ljleak.progress"
local raw = require "ljleak.raw"
local util = require "ljleak.util"

local M = {name = "tracker"}

function M.prepare(args)
   return {jit = args.jit}
end

-- LD_PRELOAD must reach the program at PATH (and its #! interpreter).
function M.check(_, path)
   preflight.check_traceable(path)
end

function M.command(state, command, path, run_dir)
   local env = engines.with_user_env({LD_PRELOAD = engines.preload(state.library), [const.ENV.DIR] = run_dir,
                                      LUA_INIT = engines.lua_init()})
   if state.jit == "off" then env.LUA_INIT = engines.with_jit("off", env.LUA_INIT) end
   return path, command, env
end

-- Under the tracker each process holds proc.PID.live in RUN_DIR from its start (or its fork) until
-- it writes its report, proc.PID.raw. The pids of those running, and how many have reported.
local function processes(run_dir)
   local running, reported = {}, 0
   local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
   if not ok then return running, reported end
   for name in iter, dir_obj do
      local pid = tonumber(name:match("^proc%.(%d+)%.live$") or "")
      if pid and not lfs.attributes(("%s/proc.%d.raw"):format(run_dir, pid)) and util.alive(pid) then
         running[#running + 1] = pid
      elseif name:match("^proc%.%d+%.raw$") then
         reported = reported + 1
      end
   end
   return running, reported
end

-- A raw report, once renamed proc.PID.raw, is not written again: the reports are parsed as they
-- appear while the command runs (the CLI waits on its own core), and the collect at the end
-- parses only the last ones. STATE.parsed: path -> {key, proc, err}; the key (inode, size, change
-- time) tells a report that a later process of the same pid wrote under the same name. A report
-- of more than AHEAD_BYTES waits for the end: while a tick parses, a signal to ljleak waits to be
-- passed on, and the timeout to be seen (256 KiB: some 30 ms).
M.AHEAD_BYTES = 256 * 1024
local function attrs_key(a)
   return ("%s:%s:%s"):format(a.ino, a.size, a.change)
end

local function parse_raw(state, path, a)
   local cache, key = state and state.parsed, attrs_key(a)
   local hit = cache and cache[path]
   if hit and hit.key == key then return hit.proc, hit.err end
   local proc, err = raw.read(path)
   if cache then cache[path] = {key = key, proc = proc, err = err} end
   return proc, err
end

local function parse_new(state, run_dir, on_report)
   local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
   if not ok then return end
   for name in iter, dir_obj do
      local path = run_dir .. "/" .. name
      if not state.parsed[path] and name:match("^proc%.%d+%.raw$") then
         local a = lfs.symlinkattributes(path)
         local proc = a and a.mode == "file" and a.size <= M.AHEAD_BYTES and parse_raw(state, path, a)
         if proc and on_report then pcall(on_report, proc) end   -- (its failure is met again at the end)
      end
   end
end

-- A tenth of ELAPSED seconds, from 10 ms to MOST.
local function tenth(elapsed, most)
   return math.max(0.01, math.min(most, elapsed / 10))
end

-- While the command runs: the run directory is read for new reports ever less often (every
-- tenth of the time run so far, from 10 ms to 1 s: a short command's reports are ready when it
-- ends, a long one's directory is not listed a hundred times a second), and ON_REPORT(proc)
-- called with each. On a terminal, once the command has run for 2 seconds (a test suite, a long
-- program): the time, the processes running and those checked, twice a second.
function M.ticker(state, run_dir, status_line, on_report)
   state.parsed = {}
   local start, last, listed = process.now(), -1, -1
   return function()
      local elapsed = process.now() - start
      if elapsed - listed >= tenth(elapsed, 1) then
         listed = elapsed
         parse_new(state, run_dir, on_report)
      end
      if not status_line.enabled or elapsed < 2 or elapsed - last < 0.5 then return end
      last = elapsed
      local running, reported = processes(run_dir)
      status_line:update(("ljleak: %s elapsed, %d process%s running, %d checked"):format(progress.clock(elapsed),
         #running, #running == 1 and "" or "es", reported))
   end
end

-- Seconds between ticks, after ELAPSED seconds: often while the command is young.
function M.interval(elapsed)
   return tenth(elapsed, 0.25)
end

-- After the command ended, wait up to SECONDS (default 10, 1 when INTERRUPTED) for the processes
-- still running (children that outlive it); a signal to ljleak ends the wait, and is passed on to
-- them. Returns that signal.
function M.after(_, run_dir, interrupted, seconds)
   local running
   local function still()
      running = processes(run_dir)
      return #running > 0
   end
   local _, sig, from_terminal = process.wait_while(still, seconds or (interrupted and 1 or 10))
   if sig and not from_terminal then
      for _, pid in ipairs(running) do psignal.kill(pid, sig) end
   end
   return sig
end

-- Non-leak errors found in the program (a bad free in an ffi.gc finalizer...): one JSON object a
-- line in lua.<pid>.jsonl, written by the ljleak Lua module.
local function read_errors(path, errors, problems)
   local f = io.open(path, "rb")
   if not f then return end
   local n = 0
   for line in f:lines() do
      n = n + 1
      local ok, e = pcall(cjson.decode, line)
      if ok and type(e) == "table" and e.kind and e.message then
         errors[#errors + 1] = e
      elseif line ~= "" then
         problems[#problems + 1] = {file = path, message = ("%s:%d: not an error record"):format(path, n)}
      end
   end
   f:close()
end

local function first_line(path)
   local text = util.read_file(path)
   return text and text:match("^([^\n]*)") or nil
end

-- Why process PID, started under the tracker (or spawned by a process that was), wrote no report.
local function unchecked_reason(pid, notes, opts)
   if notes[pid] then return notes[pid] end
   if opts.child == pid and opts.child_signal then
      return ("was killed by %s before its exit handlers could run"):format(opts.child_signal)
   end
   if util.alive(pid) then return "was still running when the command ended" end
   return "ended without running its exit handlers (killed by a signal, or crashed)"
end

-- -- Collecting the run directory -------------------------------------------------------------

-- Parse every proc.<pid>.raw in RUN_DIR. Returns procs (sorted by pid); problems: a list of
-- {pid, file, message} for unreadable, malformed and truncated reports; errors: non-leak errors
-- the program's processes recorded ({kind, message, pid, lua, ...}); and unchecked: the
-- processes that started under the tracker, or left it, and wrote no report ({pid, reason}).
-- OPTS.child, OPTS.child_signal: the command's own pid, and the signal that killed it.
local function collect(run_dir, opts, state)
   opts = opts or {}
   local procs, problems, errors, unchecked = {}, {}, {}, {}
   local names, started, reported, notes = {}, {}, {}, {}
   local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
   if not ok then
      problems[1] = {file = run_dir, message = tostring(iter)}
      return procs, problems, errors, unchecked
   end
   for name in iter, dir_obj do names[#names + 1] = name end
   table.sort(names)
   for _, name in ipairs(names) do
      local path = run_dir .. "/" .. name
      local pid = tonumber(name:match("^proc%.(%d+)%.") or name:match("^lua%.(%d+)%.") or "")
      local suffix = name:match("^proc%.%d+%.(.+)$")
      local a = suffix == "raw" and lfs.symlinkattributes(path)
      if a and a.mode == "file" then
         local proc, err = parse_raw(state, path, a)
         if proc then
            procs[#procs + 1] = proc
            reported[proc.pid or pid] = true
            if proc.truncated then
               problems[#problems + 1] = {pid = proc.pid, file = path, message = ("%s: truncated (process %s died "
                  .. "while writing it); its leaks may be incomplete"):format(path, tostring(proc.pid))}
            end
         else
            reported[pid] = true
            problems[#problems + 1] = {pid = pid, file = path, message = err}
         end
      elseif suffix == "raw.tmp" then
         problems[#problems + 1] = {pid = pid, file = path,
                                    message = ("process %d died while writing its report (%s)"):format(pid, path)}
         reported[pid] = true
      elseif suffix == "live" then
         started[#started + 1] = pid
         -- (the report is written into it, then it is renamed proc.PID.raw: not empty, it was cut)
         if (lfs.symlinkattributes(path, "size") or 0) > 0 and not util.alive(pid) then
            problems[#problems + 1] = {pid = pid, file = path,
                                       message = ("process %d died while writing its report (%s)"):format(pid, path)}
            reported[pid] = true
         end
      elseif suffix == "exec" or suffix == "untraced" then
         notes[pid] = first_line(path)
         if suffix == "untraced" then started[#started + 1] = pid end
      elseif name:match("^lua%.%d+%.jsonl$") then
         read_errors(path, errors, problems)
      end
   end
   local seen = {}
   for _, pid in ipairs(started) do
      if not reported[pid] and not seen[pid] then
         seen[pid] = true
         unchecked[#unchecked + 1] = {pid = pid, reason = unchecked_reason(pid, notes, opts)}
      end
   end
   table.sort(procs, function(a, b) return (a.pid or 0) < (b.pid or 0) end)
   table.sort(unchecked, function(a, b) return a.pid < b.pid end)
   return procs, problems, errors, unchecked
end


M.collect_dir = collect

-- The run's processes (RESULT: process.run's, whose child and the signal that killed it matter).
function M.collect(state, run_dir, result)
   return collect(run_dir, {child = result.pid,
                            child_signal = result.how == "killed" and process.signal_name(result.status) or nil}, state)
end

-- Frames a record keeps: LJLEAK_DEPTH below the allocation function's.
function M.depth()
   local depth = tonumber(os.getenv(const.ENV.DEPTH) or "") or const.DEPTH_DEFAULT
   return math.max(1, math.min(depth, const.DEPTH_MAX)) + 1
end

function M.builtin_suppressions()
   return {}
end

return M
