-- One run of `ljleak run` / `ljleak busted`, from the checks made before anything runs to the exit
-- code: options, output files and suppressions checked, CMD vetted, the engine's command spawned
-- and waited for, its processes collected, records built, suppressed, written and summed up.
local lfs = require "lfs"
local stat = require "posix.sys.stat"
local stdlib = require "posix.stdlib"
local unistd = require "posix.unistd"

local const = require "ljleak.const"
local engines = require "ljleak.engine"
local format = require "ljleak.format"
local model = require "ljleak.model"
local outfile = require "ljleak.outfile"
local preflight = require "ljleak.preflight"
local process = require "ljleak.process"
local progress = require "ljleak.progress"
local supp = require "ljleak.supp"
local symbolize = require "ljleak.symbolize"
local text = require "ljleak.text"
local util = require "ljleak.util"

local M = {}

local fail = util.fail
local signal_name = process.signal_name

local function warn(fmt, ...)
   io.stderr:write("ljleak: ", fmt:format(...), "\n")
end

local function version()
   local ok, core = pcall(require, "ljleak.core")
   return ok and core.version or "scm"
end
M.version = version

-- -- The run's options -------------------------------------------------------------------------

local function parse_fail_on(option)
   local kinds = {}
   for word in (option .. ","):gmatch("([^,]*),") do
      if not model.KINDS_SET[word] and word ~= "unchecked" then
         fail("usage", "--fail-on=%s: unknown leak kind '%s' (use %s, unchecked)", option, word,
            table.concat(const.KINDS, ", "))
      end
      kinds[word] = true
   end
   return kinds
end

local function parse_exitcode(option)
   local n = option:match("^%d+$") and tonumber(option)
   if not n or n > 255 then
      fail("usage", "--error-exitcode=%s: must be an integer from 0 to 255", option)
   end
   return n
end

local function parse_timeout(option)
   if option == nil then return nil end
   local n = tonumber(option)
   if not n or n <= 0 or n ~= n or n == math.huge then
      fail("usage", "--timeout=%s: must be a number of seconds greater than 0", option)
   end
   return n
end

-- The report files of ARGS, checked by outfile's rules before anything runs.
function M.check_outputs(args)
   local outputs, err = format.check_outputs(args, supp.owns)
   if not outputs then fail("usage", "%s", err) end
   return outputs
end

-- Write the report files; false if one could not be written (said on stderr).
function M.write_outputs(outputs, rep, opts)
   local ok, errors = format.write_outputs(outputs, rep, opts)
   for _, err in ipairs(errors) do warn("%s", err) end
   return ok
end

-- -- Suppressions ----------------------------------------------------------------------------

-- The suppression entries of a run: the curated default files (unless --no-default-suppressions),
-- then each --suppressions=FILE in order. A file that cannot be read or parsed is a usage error,
-- found before anything runs.
local function load_suppressions(args)
   local files = {}
   if not args.no_default_suppressions then
      local defaults, err = supp.default_files()
      if not defaults then fail("failure", "%s", err) end
      for _, f in ipairs(defaults) do files[#files + 1] = f end
   end
   for _, f in ipairs(args.suppressions or {}) do files[#files + 1] = f end
   local entries, err = supp.load(files)
   if not entries then fail("usage", "suppressions: %s", err) end
   return entries
end

-- Apply ENTRIES to REP (marking what they suppress), list the suppressions used (the engine's own
-- too), and write --gen-suppressions (OUTPUTS: from check_outputs). Returns false if that file
-- could not be written.
local function suppress(rep, entries, args, outputs, depth, builtin)
   supp.apply(rep, entries, {depth = depth})
   for _, u in ipairs(builtin or {}) do rep.suppressions[#rep.suppressions + 1] = u end
   rep.suppressions = require("ljleak.json").array(rep.suppressions)
   rep.summary = model.summarize(rep.leaks, rep.errors)
   if not args.gen_suppressions then return true end
   local generated = supp.generate(rep)
   local ok, err = outfile.write(outputs.gen_suppressions, function(write)
      write(supp.format(generated, supp.generated_header(rep)))
   end)
   if not ok then
      warn("%s", err)
      return false
   end
   warn("wrote %d suppression entr%s to %s", #generated, #generated == 1 and "y" or "ies", args.gen_suppressions)
   return true
end

-- -- The run directory -------------------------------------------------------------------------

-- Absolute (programs change directory). As root, processes may become another user (nginx workers
-- run as nobody): they may then create their reports in it, but not list it.
local function make_run_dir()
   local tmp = os.getenv("TMPDIR")
   if not tmp or tmp == "" then tmp = "/tmp" end
   local dir, err = stdlib.mkdtemp(tmp .. "/ljleak.XXXXXX")
   if not dir then fail("failure", "cannot create a run directory in %s: %s", tmp, tostring(err)) end
   dir = stdlib.realpath(dir) or dir
   if unistd.geteuid() == 0 then stat.chmod(dir, tonumber("1733", 8)) end
   return dir
end

-- Remove DIR and what is in it, without following symbolic links.
local function remove_tree(dir)
   for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." then
         local path = dir .. "/" .. name
         if lfs.symlinkattributes(path, "mode") == "directory" then
            remove_tree(path)
         else
            os.remove(path)
         end
      end
   end
   return lfs.rmdir(dir)
end

-- -- The run ---------------------------------------------------------------------------------

-- Run PATH with ARGV and ENV added to the child's environment only (a false value removes a
-- variable). Returns process.run's result; fails when CMD could not be started.
local function spawn_and_wait(path, argv, env, opts)
   local res, err, code = process.run(path, argv, env, opts)
   if not res then
      if code then fail("not_found", "%s: %s", argv[1], err) end
      fail("failure", "%s", err)
   end
   return res
end

-- Say which processes were not checked, and why (at most LIMIT lines).
local function warn_unchecked(unchecked, limit)
   for i, u in ipairs(unchecked) do
      if i > limit then
         warn("... and %d more processes not checked (see the JSON report's processes)", #unchecked - limit)
         break
      end
      warn("not checked: process %d %s", u.pid, u.reason)
   end
end

-- The kinds of the set KINDS (leak kinds and unchecked), in the order of const.KINDS, as a list.
local function kinds_list(kinds)
   local list = {}
   for _, k in ipairs(const.KINDS) do
      if kinds[k] then list[#list + 1] = k end
   end
   if kinds.unchecked then list[#list + 1] = "unchecked" end
   return list
end

local function kinds_text(kinds)
   return table.concat(kinds_list(kinds), ",")
end

-- ljleak's exit code for report REP and why ({exit_code, why, fail_on}: the report's `verdict`;
-- fail_on: the --fail-on kinds, which `ljleak report` lists as the run did), before its files are
-- written. RUN: {how, exit_status (CMD's, 128+N when killed), interrupted, procs
-- (checked), unchecked, name (CMD's)}; OPTS: the run's (fail_on, error_exitcode, exit).
function M.verdict(rep, run, opts)
   local EXIT, fail_on = opts.exit, opts.fail_on
   local function v(code, fmt, ...) return {exit_code = code, why = fmt:format(...), fail_on = kinds_list(fail_on)} end
   if run.interrupted then
      return v(run.interrupted.by == "timeout" and EXIT.timeout or EXIT.signal_base + run.interrupted.signal,
               "interrupted (%s): the report covers only the processes that finished", rep.interrupted)
   end
   if run.how == "killed" then
      return v(run.exit_status, "%s was killed by %s", run.name, signal_name(run.exit_status - EXIT.signal_base))
   end
   if run.procs == 0 then return v(EXIT.failure, "no process was checked") end
   local why = {}
   local failing = {records = 0, blocks = 0, bytes = 0}
   for _, leak in ipairs(rep.leaks) do
      if fail_on[leak.kind] and not model.is_suppressed(leak) then
         failing.records, failing.blocks, failing.bytes = failing.records + 1, failing.blocks + leak.blocks,
            failing.bytes + leak.bytes
      end
   end
   if failing.records > 0 then
      why[#why + 1] = ("%s of a --fail-on kind (%s): %s in %s"):format(text.plural(failing.records, "record"),
         kinds_text(fail_on), text.plural(failing.bytes, "byte"), text.plural(failing.blocks, "block"))
   end
   local errors = rep.summary.error_totals or {records = 0}
   if errors.records > 0 then
      why[#why + 1] = ("%s (Valgrind's or the ffi.gc registry's)"):format(text.plural(errors.records, "error"))
   end
   if fail_on.unchecked and run.unchecked > 0 then
      why[#why + 1] = ("%s not checked (--fail-on=unchecked)"):format(text.plural(run.unchecked, "process"))
   end
   if #why > 0 and opts.error_exitcode ~= 0 then
      return v(opts.error_exitcode, "%s (--error-exitcode)", table.concat(why, "; "))
   end
   if #why > 0 then
      return v(run.exit_status, "%s, but --error-exitcode=0: %s's own exit status", table.concat(why, "; "), run.name)
   end
   return v(run.exit_status, "nothing of a --fail-on kind (%s) found: %s's own exit status",
            kinds_text(fail_on), run.name)
end

-- What the engine found, as a report: built, said about (Lua frames, threads, unchecked
-- processes, interruption), suppressed, written, and summed up on stderr. Returns the exit code.
local function finish(engine, state, run_dir, res, command, args, opts)
   local EXIT = opts.exit
   local interrupted = res.interrupted or (res.late_signal and {signal = res.late_signal, by = "signal"})
   local how, status = res.how, res.status
   local exit_status = how == "killed" and EXIT.signal_base + status or status

   local procs, problems, errors, unchecked = engine.collect(state, run_dir, res)

   local rep = model.build(procs, {engine = engine.name, command = command, exit_status = exit_status,
                                   version = version(), errors = errors,
                                   symbolizer = symbolize.new({tracker = state.library})})
   for _, proc in ipairs(rep.processes or {}) do
      if proc.lua then warn("process %d: Lua frames %s", proc.pid, proc.lua) end
      if proc.unstopped_threads then
         warn("process %d: %d thread%s could not be stopped for the check (signals blocked): their registers "
            .. "were not scanned", proc.pid, #proc.unstopped_threads, #proc.unstopped_threads == 1 and "" or "s")
      end
   end
   for _, u in ipairs(unchecked) do
      rep.processes[#rep.processes + 1] = {pid = u.pid, checked = false, reason = u.reason}
   end
   if interrupted then
      rep.interrupted = interrupted.by == "timeout" and ("timeout after %g s"):format(interrupted.seconds)
         or signal_name(interrupted.signal)
   end
   rep.problems = problems   -- listed in the summary
   local written = suppress(rep, opts.supp_entries, args, opts.outputs, engine.depth(state),
                            engine.builtin_suppressions(procs))
   -- A killed program exits 128+N whatever was found (a SIGSEGV's invalid write is still listed).
   rep.verdict = M.verdict(rep, {how = how, exit_status = exit_status, interrupted = interrupted, procs = #procs,
                                 unchecked = #unchecked, name = command[1]}, opts)
   local fail_on = opts.fail_on
   local render_opts = {show_reachable = args.show_reachable, fail_on = fail_on}
   written = M.write_outputs(opts.outputs, rep, render_opts) and written
   io.stderr:write(("ljleak: leak check of %d process%s%s\n"):format(#procs, #procs == 1 and "" or "es",
      #unchecked > 0 and (", %d not checked"):format(#unchecked) or ""))
   warn_unchecked(unchecked, 20)
   io.stderr:write(text.render(rep, render_opts))
   local code = rep.verdict.exit_code
   if interrupted then
      warn("interrupted (%s): the report covers only the processes that finished", rep.interrupted)
   elseif #procs == 0 and how ~= "killed" then
      warn("no process was checked%s", #unchecked > 0 and " (see above)" or
         ": the command ran no program the tracker could enter")
   elseif not written then
      code = EXIT.failure   -- a report file could not be written (said above)
   end
   return code
end

-- Run COMMAND (argv) as ARGS (the parsed options) say, with EXTRA_ENV added to its environment.
-- EXIT: ljleak.cli's exit-code table. Returns the exit code; an expected failure is raised.
function M.run(args, command, extra_env, EXIT)
   local opts = {exit = EXIT}
   opts.fail_on = parse_fail_on(args.fail_on)
   opts.error_exitcode = parse_exitcode(args.error_exitcode)
   local timeout = parse_timeout(args.timeout)
   opts.outputs = M.check_outputs(args)
   opts.supp_entries = load_suppressions(args)
   local engine = engines.get(args.engine)
   local state = engine.prepare(args)

   local path = preflight.resolve_command(command[1])
   if not path then
      local exists = command[1]:find("/", 1, true) and lfs.attributes(command[1], "mode")
      fail("not_found", "%s: command not found%s", command[1],
         exists and " (" .. (exists == "file" and "not executable" or "a " .. exists) .. ")" or "")
   end
   engine.check(state, path)
   state.library = engines.tracker_library()
   local run_dir = make_run_dir()

   local ok, result = xpcall(function()
      local exe, argv, env = engine.command(state, command, path, run_dir)
      for k, v in pairs(extra_env) do env[k] = v end
      local status_line = progress.new()
      local res = {pcall(spawn_and_wait, exe, argv, env,
                         {timeout = timeout, tick = engine.ticker(state, run_dir, status_line)})}
      status_line:clear()
      if not res[1] then error(res[2], 0) end
      res = res[2]
      res.late_signal = engine.after(state, run_dir, res.interrupted)
      return finish(engine, state, run_dir, res, command, args, opts)
   end, util.traceback)
   if args.keep_run_dir then
      warn("run directory kept: %s", run_dir)
   else
      remove_tree(run_dir)
   end
   if not ok then error(result, 0) end
   return result
end

return M
