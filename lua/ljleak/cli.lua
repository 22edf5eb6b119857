-- The ljleak command line: the argument model (argparse), the commands (run, busted, suppressions,
-- report) and the exit-code table. main(argv) returns the exit code; it never calls os.exit
-- (run as a script, as bin/ljleak does, it exits with it). One run's work is ljleak.run's.
local argparse = require "argparse"
local lfs = require "lfs"

local const = require "ljleak.const"
local format = require "ljleak.format"
local gate = require "ljleak.gate"
local json = require "ljleak.json"
local merge = require "ljleak.merge"
local outfile = require "ljleak.outfile"
local preflight = require "ljleak.preflight"
local run = require "ljleak.run"
local supp = require "ljleak.supp"
local text = require "ljleak.text"
local util = require "ljleak.util"

local M = {}

-- Exit codes; an expected failure (util.fail) names one of them.
local EXIT = {
   ok = 0,
   usage = 2,          -- bad command line, or a CMD that LD_PRELOAD cannot trace
   failure = 2,        -- ljleak itself could not do its job (no tracker, no run directory, ...)
   leaks = 42,         -- default --error-exitcode
   not_found = 127,    -- CMD not found on PATH, or not an executable file
   signal_base = 128,  -- CMD killed by signal N (or ljleak interrupted by it): 128 + N
   timeout = 124,      -- --timeout expired (as timeout(1))
   internal = 70,      -- a bug in ljleak (EX_SOFTWARE)
}
M.EXIT = EXIT

local PROG = "ljleak"
local MERGE = "report-merge"   -- `report merge`, as the parser knows it
local fail = util.fail

-- -- Command line parser ---------------------------------------------------------------------

-- argparse's own -h exits the process; ours only records which parser's help was asked for.
local function add_help(parser, state)
   parser:add_help(false)
   parser:flag("-h --help", "Show this help message and exit.")
      :action(function() state.help = state.help or parser end)
end

-- WANTED: the command the command line names (its first word that is one); only that command
-- gets its options and arguments (each command's take milliseconds to build, paid by every run);
-- the others are there by name, for the top-level help and for argparse's "did you mean".
local function build_parser(state, wanted)
   local parser = argparse(PROG, "Find memory leaks in LuaJIT FFI code and in the C code it drives.")
      :command_target("command")
      :require_command(false)   -- checked in main(), after --version
   add_help(parser, state)
   parser:flag("--version", "Show the version and exit.")

   -- The verdict's options: `run`, `busted`, and `report` re-gating a saved report.
   local function add_gate_options(cmd, fail_on_default)
      cmd:option("--fail-on", "Leak kinds that make the run fail: a comma-separated list of "
         .. "definite, indirect, possible, reachable, unchecked (a process that was not checked), and "
         .. "growth (`soak`)"
         .. (fail_on_default and "." or "; default: the run's (its verdict's), else definite."),
         fail_on_default):argname("KINDS")
      cmd:option("--error-exitcode", "Exit code when a leak of a --fail-on kind is found (0: keep CMD's).",
         tostring(EXIT.leaks)):argname("N")
      cmd:option("--baseline", "Fail only on leak sites not in the baseline FILE (a JSON report, or a list "
         .. "written by --update-baseline), or grown beyond it."):argname("FILE")
      cmd:flag("--update-baseline", "Rewrite the --baseline FILE with this run's leak sites.")
   end

   -- Options shared by every command that runs something under an engine.
   local function add_run_options(cmd, fail_on)
      add_help(cmd, state)
      cmd:option("--engine", "Leak checker: the in-process tracker (default) or Valgrind memcheck.", "tracker")
         :choices({"tracker", "valgrind"})
      cmd:option("--json", "Write the leak report as JSON (schema 1) to FILE."):argname("FILE")
      cmd:option("--junit", "Write JUnit XML to FILE: a test case per test (busted), else per leak site.")
         :argname("FILE")
      cmd:flag("--junit-strict", "Leave out the test cases' file and line attributes (valid for Jenkins' "
         .. "junit-10.xsd).")
      cmd:option("--html", "Write the report as a self-contained HTML page to FILE."):argname("FILE")
      cmd:option("--folded", "Write the leaks as folded stacks (flame graphs) to FILE."):argname("FILE")
      add_gate_options(cmd, fail_on or "definite")
      cmd:flag("--show-reachable", "List reachable blocks too (always counted in the summary).")
      cmd:flag("--keep-run-dir", "Keep the run directory with the raw per-process reports.")
      cmd:option("--suppressions", "Also suppress what the Valgrind-format suppression FILE matches "
         .. "(repeatable; both engines).", nil, nil, 1, "*"):argname("FILE")
      cmd:flag("--no-default-suppressions", "Do not use ljleak's curated suppression files.")
      cmd:option("--gen-suppressions", "Write one suppression entry per unsuppressed leak site and error "
         .. "to FILE."):argname("FILE")
      cmd:option("--valgrind-opts", "More options for valgrind, separated by spaces (--engine=valgrind; "
         .. "repeatable).", nil, nil, 1, "*"):argname("OPTS")
      cmd:option("--timeout", "End the command (SIGTERM, then SIGKILL after 10 s) if it runs longer than "
         .. "SECONDS; report what finished, and exit 124."):argname("SECONDS")
      cmd:option("--jit", "LuaJIT's JIT compiler in the programs run: on, or off (the default under "
         .. "--engine=valgrind, where JIT code makes unbounded garbage stacks).")
         :choices({"on", "off"}):argname("on|off")
   end

   -- A command NAME: its options and arguments made by BUILD(cmd) only when it is WANTED.
   local function command(name, summary, build)
      local cmd = parser:command(name, summary)
      if wanted == name then build(cmd) end
      return cmd
   end

   command("run", "Run CMD [ARGS...] with the leak tracker and report its leaks.", function(cmd)
      cmd:usage("Usage: ljleak run [options] -- CMD [ARGS...]")
      add_run_options(cmd)
      -- Words before `--` land here, so that a forgotten `--` gets its own message.
      cmd:argument("stray"):args("*"):hidden(true)
   end)

   command("busted", "Run a busted suite under LuaJIT with the leak tracker: every leak carries its test's "
      .. "name, and a test that leaks fails.", function(cmd)
      cmd:usage("Usage: ljleak busted [options] [-- busted options and paths]")
      add_run_options(cmd)
      cmd:flag("--no-per-test", "Do not check each test for leaks right after it ran (the tracker's "
         .. "per-test check fails a leaking test in busted's output).")
      cmd:argument("paths", "Spec files or folders (also accepted after `--`)."):args("*")
   end)

   command("test-nginx", "Run a Test::Nginx suite (prove) with every nginx it starts under the engine: every "
      .. "leak names its test block, and a leak fails the run.", function(cmd)
      cmd:usage("Usage: ljleak test-nginx [options] -- prove [prove options and paths]")
      add_run_options(cmd)
      cmd:argument("stray"):args("*"):hidden(true)
   end)

   command("soak", "Do one unit of work N times under the tracker (a Lua function, or an nginx location "
      .. "over loopback) and fail on allocation sites whose live set grows with it.", function(cmd)
      cmd:usage("Usage: ljleak soak --lua=MODULE.FUNCTION [options] [-- luajit [ARGS...]]\n"
         .. "       ljleak soak --url=URL [options] -- nginx ARGS...")
      add_run_options(cmd, "definite,growth")
      cmd:option("--lua", "Call MODULE.FUNCTION(i) N times in CMD (a LuaJIT; default luajit).")
         :argname("MODULE.FUNCTION")
      cmd:option("--url", "GET URL (http://127.0.0.1:PORT/PATH) N times from CMD, a server (nginx) with Lua.")
         :argname("URL")
      cmd:option("--iterations", "How many times (N).", "200"):argname("N")
      cmd:option("--warmup", "Iterations left out of the fit (default N/10)."):argname("W")
      cmd:argument("stray"):args("*"):hidden(true)
   end)

   command("suppressions", "Work on Valgrind-format suppression files.", function(cmd)
      add_help(cmd, state)
      cmd:command_target("suppressions_command")
      local smerge = cmd:command("merge", "Merge suppression files into one, without duplicate entries.")
      add_help(smerge, state)
      smerge:argument("files", "Suppression files."):args("+"):argname("FILE")
      smerge:option("-o --output", "Write the result to FILE instead of standard output."):argname("FILE")
   end)

   command("report", "Print the summary of a saved JSON report and judge it as `run` would (its exit "
      .. "code); or merge the reports of a suite's shards into one.", function(cmd)
      cmd:usage("Usage: ljleak report [options] FILE.json\n       ljleak report merge FILE.json... [-o FILE]")
      add_help(cmd, state)
      cmd:argument("file", "A JSON report written by `ljleak run --json=FILE`."):argname("FILE.json")
      cmd:flag("--show-reachable", "List reachable blocks too.")
      add_gate_options(cmd)
      cmd:option("--junit", "Also write JUnit XML to FILE."):argname("FILE")
      cmd:flag("--junit-strict", "Leave out the test cases' file and line attributes.")
      cmd:option("--html", "Also write the report as an HTML page to FILE."):argname("FILE")
      cmd:option("--folded", "Also write the leaks as folded stacks to FILE."):argname("FILE")
   end)

   -- `ljleak report merge ...` (main() turns it into this hidden command).
   command(MERGE, "Merge the JSON reports of a suite's shards into one report.", function(cmd)
      cmd:usage("Usage: ljleak report merge FILE.json... [-o FILE]")
      add_help(cmd, state)
      cmd:argument("files", "JSON reports written by `ljleak run --json=FILE`."):args("+"):argname("FILE.json")
      cmd:option("-o --output", "Write the merged report to FILE instead of standard output."):argname("FILE")
   end):hidden(true)
   return parser
end

-- argparse messages may span lines ("...\nDid you mean '--json'?"): make them one.
local function one_line(msg)
   return (tostring(msg):gsub("%s*\n%s*(%a?)", function(c) return "; " .. c:lower() end))
end

-- -- Commands --------------------------------------------------------------------------------

local commands = {}

function commands.run(args, command)
   if #args.stray > 0 then
      fail("usage", "run: unexpected argument '%s'; put '--' before the command: "
         .. "ljleak run [options] -- CMD [ARGS...]", args.stray[1])
   end
   if not command or #command == 0 then
      fail("usage", "run: missing '--' and the command to run: ljleak run [options] -- CMD [ARGS...]")
   end
   return run.run(args, command, {}, EXIT)
end

-- A Test::Nginx suite: the command runs with nothing preloaded; ljleak.testnginx's engine reaches
-- each nginx it starts.
commands["test-nginx"] = function(args, command)
   if #args.stray > 0 then
      fail("usage", "test-nginx: unexpected argument '%s'; put '--' before the command: "
         .. "ljleak test-nginx [options] -- prove [ARGS...]", args.stray[1])
   end
   if not command or #command == 0 then
      fail("usage", "test-nginx: missing '--' and the command to run: ljleak test-nginx [options] -- prove [ARGS...]")
   end
   return run.run(args, command, {}, EXIT, require("ljleak.testnginx").engine)
end

-- busted's script has a `lua` shebang: run it under luajit, with the busted integration on.
function commands.busted(args, rest)
   local script = os.getenv(const.ENV.BUSTED) or preflight.resolve_command("busted")
   if not script or not preflight.is_file(script) then
      fail("usage", "busted: command not found; install it with `apt-get install lua-busted`")
   end
   local command = {"luajit", script}
   for _, a in ipairs(args.paths) do command[#command + 1] = a end
   for _, a in ipairs(rest or {}) do command[#command + 1] = a end
   -- With a baseline, the verdict is the whole run's: a test is not failed in busted for a known leak.
   return run.run(args, command, {
      [const.ENV.PER_TEST] = (args.no_per_test or args.baseline) and "0" or "1",
      [const.ENV.FAIL_ON] = args.fail_on,
   }, EXIT)
end

-- `ljleak soak`: growth is a --fail-on kind there by default.
function commands.soak(args, command)
   if #args.stray > 0 then
      fail("usage", "soak: unexpected argument '%s'; put '--' before the command", args.stray[1])
   end
   return require("ljleak.soakrun").command(args, command, EXIT)
end

-- `ljleak suppressions merge FILE...`: the entries of every FILE, without duplicates (same kind and
-- frames; leak kinds joined), names made unique, comments kept.
function commands.suppressions(args)
   local target
   if args.output then
      local targets, err = outfile.check({{option = "--output", path = args.output, owns = supp.owns,
                                           what = "a suppression file written by ljleak"}})
      if not targets then fail("usage", "%s", err) end
      target = targets[1]
   end
   local entries, err = supp.load(args.files)
   if not entries then fail("usage", "%s", err) end
   local merged = supp.merge(entries)
   local merged_text = supp.format(merged, {("%s%s: %d entries (%d duplicates dropped)."):format(
      supp.MERGED_HEADER, table.concat(args.files, ", "), #merged, #entries - #merged)})
   if target then
      local ok, werr = outfile.write(target, function(write) write(merged_text) end)
      if not ok then fail("failure", "%s", werr) end
   else
      io.stdout:write(merged_text)
   end
   return EXIT.ok
end

-- `ljleak report FILE.json`: its text report, its files, and its verdict (the exit code `run` gave,
-- by this command line's --fail-on, --error-exitcode and --baseline).
function commands.report(args)
   util.jit_for(lfs.attributes(args.file, "size") or 0)
   local rep, err = json.read(args.file)
   if not rep then fail("usage", "%s", err) end
   -- Without --fail-on, the kinds the run failed on (a report written by `ljleak run` says them).
   local ran = type(rep.verdict) == "table" and type(rep.verdict.fail_on) == "table" and rep.verdict.fail_on
   args.fail_on = args.fail_on or (ran and #ran > 0 and table.concat(ran, ",")) or "definite"
   local gate_opts = gate.options(args)
   local outputs = run.check_outputs(args, gate_opts)
   local written = gate.judge(rep, gate_opts, outputs.baseline)
   -- With a report file on standard output, the summary goes to standard error.
   local summary_to = run.free_stream(outputs, io.stdout)
   rep.verdict = gate.verdict(rep, gate_opts, EXIT, rep.command and rep.command[1] or "the command")
   local code = rep.verdict.exit_code
   local opts = {show_reachable = args.show_reachable, full = args.file, fail_on = gate_opts.fail_on,
                 strict = args.junit_strict}
   summary_to:write(text.render(rep, opts))
   gate.tell(rep, gate_opts, summary_to, summary_to)
   written = run.write_outputs(outputs, rep, opts) and written
   return written and code or EXIT.failure
end

-- `ljleak report merge A.json B.json ... [-o FILE]`: one report of all of them.
commands[MERGE] = function(args)
   local target
   if args.output then
      local targets, err = outfile.check({{option = "--output", path = args.output, owns = format.owns.json}})
      if not targets then fail("usage", "%s", err) end
      target = targets[1]
   end
   local reports, bytes = {}, 0
   for _, file in ipairs(args.files) do bytes = bytes + (lfs.attributes(file, "size") or 0) end
   util.jit_for(bytes)
   for i, file in ipairs(args.files) do
      local rep, err = json.read(file)
      if not rep then fail("usage", "%s", err) end
      reports[i] = rep
   end
   local merged = merge.merge(reports, args.files)
   if target then
      local ok, err = format.write_to(target, merged, "json")
      if not ok then fail("failure", "%s", err) end
      io.stderr:write(("ljleak: merged %d reports into %s: %d records, %d processes\n"):format(#reports,
         args.output, #merged.leaks, #merged.processes))
   else
      io.stdout:write(format.format(merged, "json"))
   end
   return EXIT.ok
end

-- -- Entry point -----------------------------------------------------------------------------

local function split_at_dashdash(argv)
   local before, after = {}, nil
   for i = 1, #argv do
      if argv[i] == "--" and not after then
         after = {}
      elseif after then
         after[#after + 1] = argv[i]
      else
         before[#before + 1] = argv[i]
      end
   end
   return before, after
end

-- The command BEFORE (the words before `--`) names: its first word that does not start with "-"
-- (the top-level options take no values).
local function command_word(before)
   for _, w in ipairs(before) do
      if w:sub(1, 1) ~= "-" then return w end
   end
end

local function main(argv)
   local before, command = split_at_dashdash(argv)
   if before[1] == "report" and before[2] == "merge" then
      table.remove(before, 1)
      before[1] = MERGE
   end
   local state = {}
   local parser = build_parser(state, command_word(before))
   local ok, args = parser:pparse(before)
   if state.help then
      io.stdout:write(state.help:get_help(), "\n")
      return EXIT.ok
   end
   if not ok then fail("usage", "%s", one_line(args)) end
   if args.version then
      io.stdout:write(PROG, " ", run.version(), "\n")
      return EXIT.ok
   end
   if not args.command then
      fail("usage", "a command is required (run, busted, test-nginx, soak, report or suppressions; see ljleak --help)")
   end
   return commands[args.command](args, command)
end

function M.main(argv)
   -- libdw would ask debuginfod servers on the network for missing debug info: never.
   require("posix.stdlib").setenv("DEBUGINFOD_URLS", nil)
   local ok, result = xpcall(main, util.traceback, argv or {})
   if ok then return result end
   if util.is_failure(result) then
      io.stderr:write(PROG, ": ", result.message, "\n")
      return EXIT[result.exit]
   end
   io.stderr:write(PROG, ": internal error: ", tostring(result), "\n")
   return EXIT.internal
end

-- `luajit cli.lua ARGS...`, as bin/ljleak runs it: the command line is in `arg`.
-- The JIT compiler starts off (see util.jit_for: a big report turns it on).
if ... ~= "ljleak.cli" then
   if jit then jit.off() end
   os.exit(M.main(arg), true)
end

return M
