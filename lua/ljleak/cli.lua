-- The ljleak command line: `ljleak run [options] -- CMD [ARGS...]` and `ljleak report FILE.json`.
-- main(argv) returns the exit code; it never calls os.exit (bin/ljleak does).
local argparse = require "argparse"
local bit = require "bit"
local lfs = require "lfs"
local psignal = require "posix.signal"
local stat = require "posix.sys.stat"
local stdlib = require "posix.stdlib"
local unistd = require "posix.unistd"

local outfile = require "ljleak.outfile"
local process = require "ljleak.process"
local progress = require "ljleak.progress"
local raw = require "ljleak.raw"
local report = require "ljleak.report"
local supp = require "ljleak.supp"
local symbolize = require "ljleak.symbolize"
local tracker_engine = require "ljleak.tracker"
local util = require "ljleak.util"
local valgrind = require "ljleak.valgrind"

local M = {}

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

-- -- Errors ----------------------------------------------------------------------------------
-- Expected failures are raised as {exit = code, message = text} and turned into one stderr line
-- by main(); anything else is a bug and gets a traceback.

local Failure = {}
Failure.__index = Failure

local function fail(code, fmt, ...)
   error(setmetatable({exit = code, message = fmt:format(...)}, Failure), 0)
end

-- xpcall handler: keep a Failure as it is, give anything else its traceback.
local function traceback(err)
   if getmetatable(err) == Failure then return err end
   return debug.traceback(tostring(err), 2)
end

local function warn(fmt, ...)
   io.stderr:write(PROG, ": ", fmt:format(...), "\n")
end

local function version()
   local ok, core = pcall(require, "ljleak.core")
   return ok and core.version or "scm"
end

-- -- Command line parser ---------------------------------------------------------------------

-- argparse's own -h exits the process; ours only records which parser's help was asked for.
local function add_help(parser, state)
   parser:add_help(false)
   parser:flag("-h --help", "Show this help message and exit.")
      :action(function() state.help = state.help or parser end)
end

local function build_parser(state)
   local parser = argparse(PROG, "Find memory leaks in LuaJIT FFI code and in the C code it drives.")
      :command_target("command")
      :require_command(false)   -- checked in main(), after --version
   add_help(parser, state)
   parser:flag("--version", "Show the version and exit.")

   -- Options shared by every command that runs something under an engine.
   local function add_run_options(cmd)
      add_help(cmd, state)
      cmd:option("--engine", "Leak checker: the in-process tracker (default) or Valgrind memcheck.", "tracker")
         :choices({"tracker", "valgrind"})
      cmd:option("--json", "Write the leak report as JSON (schema 1) to FILE."):argname("FILE")
      cmd:option("--junit", "Write the leaks as JUnit XML (a failing test case each) to FILE."):argname("FILE")
      cmd:option("--html", "Write the report as a self-contained HTML page to FILE."):argname("FILE")
      cmd:option("--folded", "Write the leaks as folded stacks (flame graphs) to FILE."):argname("FILE")
      cmd:option("--fail-on", "Leak kinds that make the run fail: a comma-separated list of "
         .. "definite, indirect, possible, reachable, and unchecked (a process that was not checked).",
         "definite"):argname("KINDS")
      cmd:option("--error-exitcode", "Exit code when a leak of a --fail-on kind is found (0: keep CMD's).",
         tostring(EXIT.leaks)):argname("N")
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

   local run = parser:command("run", "Run CMD [ARGS...] with the leak tracker and report its leaks.")
   run:usage("Usage: ljleak run [options] -- CMD [ARGS...]")
   add_run_options(run)
   -- Words before `--` land here, so that a forgotten `--` gets its own message.
   run:argument("stray"):args("*"):hidden(true)

   local busted = parser:command("busted", "Run a busted suite under LuaJIT with the leak tracker: "
      .. "every leak carries its test's name, and a test that leaks fails.")
   busted:usage("Usage: ljleak busted [options] [-- busted options and paths]")
   add_run_options(busted)
   busted:flag("--no-per-test", "Do not check each test for leaks right after it ran (the tracker's "
      .. "per-test check fails a leaking test in busted's output).")
   busted:argument("paths", "Spec files or folders (also accepted after `--`)."):args("*")

   local tn = parser:command("test-nginx", "Run a Test::Nginx suite (prove) with every nginx it starts "
      .. "under the engine: every leak names its test block, and a leak fails the run.")
   tn:usage("Usage: ljleak test-nginx [options] -- prove [prove options and paths]")
   add_run_options(tn)
   tn:argument("stray"):args("*"):hidden(true)

   local sup = parser:command("suppressions", "Work on Valgrind-format suppression files.")
   add_help(sup, state)
   sup:command_target("suppressions_command")
   local merge = sup:command("merge", "Merge suppression files into one, without duplicate entries.")
   add_help(merge, state)
   merge:argument("files", "Suppression files."):args("+"):argname("FILE")
   merge:option("-o --output", "Write the result to FILE instead of standard output."):argname("FILE")

   local rep = parser:command("report", "Print the summary of a saved JSON report.")
   add_help(rep, state)
   rep:argument("file", "A JSON report written by `ljleak run --json=FILE`."):argname("FILE.json")
   rep:flag("--show-reachable", "List reachable blocks too.")
   rep:option("--junit", "Also write the leaks as JUnit XML to FILE."):argname("FILE")
   rep:option("--html", "Also write the report as an HTML page to FILE."):argname("FILE")
   rep:option("--folded", "Also write the leaks as folded stacks to FILE."):argname("FILE")
   return parser
end

-- argparse messages may span lines ("...\nDid you mean '--json'?"): make them one.
local function one_line(msg)
   return (tostring(msg):gsub("%s*\n%s*(%a?)", function(c) return "; " .. c:lower() end))
end

-- -- Checking options ------------------------------------------------------------------------

local function parse_fail_on(text)
   local kinds = {}
   for word in (text .. ","):gmatch("([^,]*),") do
      if not raw.is_kind[word] and word ~= "unchecked" then
         fail(EXIT.usage, "--fail-on=%s: unknown leak kind '%s' (use %s, unchecked)", text, word,
            table.concat(raw.KINDS, ", "))
      end
      kinds[word] = true
   end
   return kinds
end

local function parse_exitcode(text)
   local n = text:match("^%d+$") and tonumber(text)
   if not n or n > 255 then
      fail(EXIT.usage, "--error-exitcode=%s: must be an integer from 0 to 255", text)
   end
   return n
end

local function parse_timeout(text)
   if text == nil then return nil end
   local n = tonumber(text)
   if not n or n <= 0 or n ~= n or n == math.huge then
      fail(EXIT.usage, "--timeout=%s: must be a number of seconds greater than 0", text)
   end
   return n
end

local function dirname(path)
   local dir = path:match("^(.*)/[^/]*$")
   if dir == nil then return "." end
   return dir == "" and "/" or dir
end

-- The report files asked for (--json, --junit, --html, --folded), by format name.
local OUTPUTS = {"json", "junit", "html", "folded"}

-- A suppression file that ljleak wrote (--gen-suppressions, `suppressions merge -o`), so that
-- writing over it loses nothing the user wrote by hand.
local MERGED_HEADER = "# Merged by ljleak from "
local function owns_suppressions(head)
   return head:sub(1, #MERGED_HEADER) == MERGED_HEADER or head:match("^# Suppressions generated by ljleak") ~= nil
end

-- Before anything runs: the output files (outfile's rules) of ARGS. Returns the targets by
-- argument name (json, ..., gen_suppressions).
local function check_outputs(args)
   local specs, names = {}, {}
   for _, name in ipairs(OUTPUTS) do
      if args[name] then
         specs[#specs + 1] = {option = "--" .. name, path = args[name], owns = report.owns[name]}
         names[#specs] = name
      end
   end
   if args.gen_suppressions then
      specs[#specs + 1] = {option = "--gen-suppressions", path = args.gen_suppressions, owns = owns_suppressions,
                           what = "a suppression file generated by ljleak"}
      names[#specs] = "gen_suppressions"
   end
   local targets, err = outfile.check(specs)
   if not targets then fail(EXIT.usage, "%s", err) end
   local by_name = {}
   for i, t in ipairs(targets) do by_name[names[i]] = t end
   return by_name
end

-- Write each report file of OUTPUTS (from check_outputs); false if one could not be written
-- (said on stderr).
local function write_outputs(outputs, rep, opts)
   local all = true
   for _, name in ipairs(OUTPUTS) do
      if outputs[name] then
         local ok, err = report.write_to(outputs[name], rep, name, opts)
         if not ok then
            warn("%s", err)
            all = false
         end
      end
   end
   return all
end

-- -- Finding and vetting CMD -----------------------------------------------------------------

local function is_executable_file(path)
   return lfs.attributes(path, "mode") == "file" and unistd.access(path, "x") == 0
end

-- CMD's path, searched on PATH unless it contains a slash (as execvp does). Nil if not found.
local function resolve_command(name)
   if name == "" then return nil end
   if name:find("/", 1, true) then
      return is_executable_file(name) and name or nil
   end
   local path = os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin"
   for dir in (path .. ":"):gmatch("([^:]*):") do
      local candidate = (dir == "" and "." or dir) .. "/" .. name
      if is_executable_file(candidate) then return candidate end
   end
   return nil
end

local function read_head(path, n)
   local f = io.open(path, "rb")
   if not f then return nil end
   local data = f:read(n)
   f:close()
   return data
end

-- Unsigned little- or big-endian integer of SIZE bytes at 0-based offset POS in S.
local function uint(s, pos, size, big)
   local n = 0
   for i = 1, size do
      local b = s:byte(pos + (big and i or size - i + 1))
      if not b then return nil end
      n = n * 256 + b
   end
   return n
end

local PT_INTERP = 3

-- For an ELF file: true if it has a PT_INTERP (is dynamically linked), false if static.
-- Nil if PATH is not a readable ELF file.
local function elf_is_dynamic(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local ehdr = f:read(64)
   if not ehdr or #ehdr < 52 or ehdr:sub(1, 4) ~= "\127ELF" then
      f:close()
      return nil
   end
   local is64, big = ehdr:byte(5) == 2, ehdr:byte(6) == 2
   local phoff, phentsize, phnum
   if is64 then
      phoff, phentsize, phnum = uint(ehdr, 32, 8, big), uint(ehdr, 54, 2, big), uint(ehdr, 56, 2, big)
   else
      phoff, phentsize, phnum = uint(ehdr, 28, 4, big), uint(ehdr, 42, 2, big), uint(ehdr, 44, 2, big)
   end
   if not phoff or not phnum or phnum == 0 or not phentsize or phentsize < 4 then
      f:close()
      return false
   end
   f:seek("set", phoff)
   local phdrs = f:read(phentsize * phnum) or ""
   f:close()
   for i = 0, phnum - 1 do
      if uint(phdrs, i * phentsize, 4, big) == PT_INTERP then return true end
   end
   return false
end

-- Would the kernel start PATH in secure-execution mode, where ld.so ignores LD_PRELOAD paths?
local function is_secure_exec(path)
   local st = stat.stat(path)
   if not st then return false end
   local setuid = bit.band(st.st_mode, stat.S_ISUID) ~= 0 and st.st_uid ~= unistd.geteuid()
   local setgid = bit.band(st.st_mode, stat.S_ISGID) ~= 0 and bit.band(st.st_mode, stat.S_IXGRP) ~= 0
      and st.st_gid ~= unistd.getegid()
   return setuid or setgid
end

-- Fail if LD_PRELOAD cannot put the tracker into the program at PATH (the one exec will run).
local function check_binary(path, shown)
   if is_secure_exec(path) then
      fail(EXIT.usage, "%s is setuid/setgid: the dynamic loader ignores LD_PRELOAD for it, "
         .. "so ljleak cannot trace it (run a copy without those bits)", shown)
   end
   if elf_is_dynamic(path) == false then
      fail(EXIT.usage, "%s is statically linked: LD_PRELOAD cannot load the tracker into it "
         .. "(build it dynamically linked, or use --engine=valgrind)", shown)
   end
end

-- Check CMD at PATH, and for a `#!` script its interpreter (one level; for `#!/usr/bin/env prog`
-- also prog, found on PATH).
local function check_traceable(path)
   check_binary(path, path)
   local head = read_head(path, 256)
   if not head or head:sub(1, 2) ~= "#!" then return end
   local line = head:match("^#!([^\n]*)") or ""
   local interp, rest = line:match("^%s*(%S+)%s*(.-)%s*$")
   if not interp then return end
   local shown = ("%s (the interpreter of %s)"):format(interp, path)
   if not is_executable_file(interp) then
      fail(EXIT.not_found, "%s: bad interpreter %s: not found or not executable", path, interp)
   end
   check_binary(interp, shown)
   if interp:match("[^/]*$") == "env" then
      for word in rest:gmatch("%S+") do
         if not word:match("^%-") and not word:find("=", 1, true) then
            local target = resolve_command(word)
            if target then
               check_binary(target, ("%s (run by %s)"):format(target, path))
            end
            break
         end
      end
   end
end

-- -- The tracker engine ----------------------------------------------------------------------

-- Absolute path of libljleak.so: $LJLEAK_PRELOAD, or next to the ljleak.core module.
local function find_tracker()
   local path = os.getenv("LJLEAK_PRELOAD")
   if not path or path == "" then
      local core_path = package.searchpath("ljleak.core", package.cpath)
      if not core_path then
         fail(EXIT.failure, "cannot find the ljleak.core module on package.cpath, nor the tracker "
            .. "library next to it (build with make, or set LJLEAK_PRELOAD)")
      end
      path = dirname(core_path) .. "/libljleak.so"
   end
   if lfs.attributes(path, "mode") ~= "file" then
      fail(EXIT.failure, "tracker library %s not found (build with make, or set LJLEAK_PRELOAD)", path)
   end
   path = stdlib.realpath(path) or path
   if path:find("[ :]") then
      fail(EXIT.failure, "tracker library path %s contains a space or colon, which LD_PRELOAD cannot express", path)
   end
   return path
end

-- LUA_INIT for CMD: every LuaJIT process loads ljleak's Lua module first, so its allocations get
-- Lua frames, then runs the user's own LUA_INIT. Other Lua interpreters skip it. A loader finds
-- ljleak's own modules where this CLI found them, whatever CMD's package.path says.
local LUA_INIT_CODE = [[
if jit then
  local dir, core = %q, %q
  table.insert(package.loaders, 2, function(name)
    if name == "ljleak.core" then return package.loadlib(core, "luaopen_ljleak_core") end
    if name == "ljleak" then name = "ljleak.init" end
    if name:match("^ljleak%%.[%%w_]+$") then return loadfile(dir .. "/" .. name:gsub("%%.", "/") .. ".lua") end
  end)
  pcall(require, "ljleak.vm")
end]]

-- The user's LUA_INIT, LUA_PATH, LUA_CPATH: bin/ljleak keeps them out of the CLI's own LuaJIT and
-- saves them as LJLEAK_SAVED_NAME ("=value" when set). The command gets them back as they were.
local USER_LUA_VARS = {"LUA_INIT", "LUA_PATH", "LUA_CPATH"}

local function user_env(name)
   local saved = os.getenv("LJLEAK_SAVED_" .. name)
   if saved then return saved:sub(2) end
   return os.getenv(name)
end

-- ENV with the user's Lua variables restored (unless ENV sets them) and the saved copies removed.
local function with_user_env(env)
   for _, name in ipairs(USER_LUA_VARS) do
      if env[name] == nil then env[name] = user_env(name) or false end
      env["LJLEAK_SAVED_" .. name] = false
   end
   return env
end

-- WITHOUT_USER: ljleak's part only (for the Lua states of a program that does not read LUA_INIT).
local function lua_init(without_user)
   local module = package.searchpath("ljleak", package.path)
   local core = package.searchpath("ljleak.core", package.cpath)
   local user = not without_user and user_env("LUA_INIT")
   local code = module and core and LUA_INIT_CODE:format(module:match("^(.*)/ljleak/[^/]*$"), core) or ""
   if user and user ~= "" then
      code = code .. "\n" .. (user:sub(1, 1) == "@" and ("dofile(%q)"):format(user:sub(2)) or user)
   end
   return code ~= "" and code or nil
end

-- The run directory: absolute (programs change directory). As root, processes may become another
-- user (nginx workers run as nobody): they may then create their reports in it, but not list it.
local function make_run_dir()
   local tmp = os.getenv("TMPDIR")
   if not tmp or tmp == "" then tmp = "/tmp" end
   local dir, err = stdlib.mkdtemp(tmp .. "/ljleak.XXXXXX")
   if not dir then fail(EXIT.failure, "cannot create a run directory in %s: %s", tmp, tostring(err)) end
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

local signal_name = process.signal_name

-- Run ARGV (ARGV[1] resolved to PATH) with ENV added to the child's environment only (a false
-- value removes a variable). Returns process.run's result; fails when CMD could not be started.
local function spawn_and_wait(path, argv, env, opts)
   local res, err, code = process.run(path, argv, env, opts)
   if not res then
      if code then fail(EXIT.not_found, "%s: %s", argv[1], err) end
      fail(EXIT.failure, "%s", err)
   end
   return res
end

-- -- The Valgrind engine ---------------------------------------------------------------------

-- What a Valgrind run needs, checked before anything runs: valgrind itself, and --valgrind-opts.
-- Returns {valgrind = path, extra = options, depth = --num-callers}.
local function valgrind_setup(args)
   local path, err = valgrind.find()
   if not path then fail(EXIT.usage, "--engine=valgrind: %s", err) end
   local extra, num_callers = valgrind.parse_extra(args.valgrind_opts)
   if not extra then fail(EXIT.usage, "%s", num_callers) end
   return {valgrind = path, extra = extra, depth = num_callers or valgrind.DEFAULT_NUM_CALLERS}
end

local now = process.now

-- Run COMMAND under memcheck, with its XML going to RUN_DIR and ENV added to its environment; on a
-- terminal, a status line shows the time, the processes running and the records so far.
-- Returns what spawn_and_wait returns.
local function valgrind_spawn(vg, command, run_dir, jit, env, opts)
   local argv = valgrind.command({valgrind = vg.valgrind, dir = run_dir, extra = vg.extra})
   for _, a in ipairs(command) do argv[#argv + 1] = a end
   local child_env = {[valgrind.ID_VAR] = valgrind.FIRST_ID}
   for k, v in pairs(env) do child_env[k] = v end
   child_env.LUA_INIT = valgrind.lua_init(jit, env.LUA_INIT or user_env("LUA_INIT"))
   local status_line = progress.new()
   local tick
   if status_line.enabled then
      local watch, start, last = valgrind.watcher(run_dir), now(), -1
      tick = function()
         local elapsed = now() - start
         if elapsed - last < 0.5 then return end
         last = elapsed
         local running, records = watch()
         status_line:update(("%s: valgrind %s elapsed, %d process%s running, %d record%s so far"):format(
            PROG, progress.clock(elapsed), running, running == 1 and "" or "es", records, records == 1 and "" or "s"))
      end
   end
   local results = {pcall(spawn_and_wait, vg.valgrind, argv, child_env, {tick = tick, timeout = opts.timeout})}
   status_line:clear()
   if not results[1] then error(results[2], 0) end
   -- Processes that outlive COMMAND may still be writing their report.
   for _, pid in ipairs(valgrind.wait_for_stragglers(run_dir, results[2].interrupted and 1 or 10)) do
      warn("process %d is still running; its report is not complete", pid)
   end
   return results[2]
end

-- Under the tracker each process holds proc.PID.live in RUN_DIR from its start (or its fork) until
-- it writes its report. After the command ended, wait up to TIMEOUT seconds for those still
-- running (children that outlive it); a signal to ljleak ends the wait, and is passed on to them.
local function tracker_stragglers(run_dir, timeout)
   local running
   local function still()
      running = {}
      for name in lfs.dir(run_dir) do
         local pid = tonumber(name:match("^proc%.(%d+)%.live$") or "")
         if pid and not lfs.attributes(("%s/proc.%d.raw"):format(run_dir, pid)) and util.alive(pid) then
            running[#running + 1] = pid
         end
      end
      return #running > 0
   end
   local _, sig, from_terminal = process.wait_while(still, timeout)
   if sig and not from_terminal then
      for _, pid in ipairs(running) do psignal.kill(pid, sig) end
   end
   return sig
end

-- -- Suppressions ----------------------------------------------------------------------------

-- The suppression entries of a run: the curated default files (unless --no-default-suppressions),
-- then each --suppressions=FILE in order. A file that cannot be read or parsed is a usage error,
-- found before anything runs.
local function load_suppressions(args)
   local files = {}
   if not args.no_default_suppressions then
      local defaults, err = supp.default_files()
      if not defaults then fail(EXIT.failure, "%s", err) end
      for _, f in ipairs(defaults) do files[#files + 1] = f end
   end
   for _, f in ipairs(args.suppressions or {}) do files[#files + 1] = f end
   local entries, err = supp.load(files)
   if not entries then fail(EXIT.usage, "suppressions: %s", err) end
   return entries
end

-- How many frames of a record the engine keeps: suppression entries are cut to as many lines, as
-- Valgrind does with --num-callers. The tracker keeps LJLEAK_DEPTH frames below the allocator's.
local function tracker_depth()
   local depth = tonumber(os.getenv("LJLEAK_DEPTH") or "") or 16
   return math.max(1, math.min(depth, 64)) + 1
end

-- Apply ENTRIES to REP (marking what they suppress), list the suppressions used (Valgrind's own
-- defaults too), and write --gen-suppressions (OUTPUTS: from check_outputs). Returns false if
-- that file could not be written.
local function suppress(rep, entries, args, outputs, depth, builtin)
   supp.apply(rep, entries, {depth = depth})
   for _, u in ipairs(builtin or {}) do rep.suppressions[#rep.suppressions + 1] = u end
   rep.suppressions = report.array(rep.suppressions)
   rep.summary = report.summarize(rep.leaks)
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

-- -- Commands --------------------------------------------------------------------------------

local commands = {}

local run_command

function commands.run(args, command)
   if #args.stray > 0 then
      fail(EXIT.usage, "run: unexpected argument '%s'; put '--' before the command: "
         .. "ljleak run [options] -- CMD [ARGS...]", args.stray[1])
   end
   if not command or #command == 0 then
      fail(EXIT.usage, "run: missing '--' and the command to run: ljleak run [options] -- CMD [ARGS...]")
   end
   return run_command(args, command, {})
end

-- A Test::Nginx suite: the command runs with nothing preloaded; ljleak.testnginx reaches each nginx.
commands["test-nginx"] = function(args, command)
   if #args.stray > 0 then
      fail(EXIT.usage, "test-nginx: unexpected argument '%s'; put '--' before the command: "
         .. "ljleak test-nginx [options] -- prove [ARGS...]", args.stray[1])
   end
   if not command or #command == 0 then
      fail(EXIT.usage, "test-nginx: missing '--' and the command to run: "
         .. "ljleak test-nginx [options] -- prove [ARGS...]")
   end
   local mode, err = require("ljleak.testnginx").mode(args)
   if not mode then fail(EXIT.usage, "test-nginx: %s", err) end
   return run_command(args, command, {}, mode)
end

-- busted's script has a `lua` shebang: run it under luajit, with the busted integration on.
function commands.busted(args, rest)
   local script = os.getenv("LJLEAK_BUSTED") or resolve_command("busted")
   if not script or lfs.attributes(script, "mode") ~= "file" then
      fail(EXIT.usage, "busted: command not found; install it with `apt-get install lua-busted`")
   end
   local command = {"luajit", script}
   for _, a in ipairs(args.paths) do command[#command + 1] = a end
   for _, a in ipairs(rest or {}) do command[#command + 1] = a end
   return run_command(args, command, {
      LJLEAK_PER_TEST = args.no_per_test and "0" or "1",
      LJLEAK_FAIL_ON = args.fail_on,
   })
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

-- MODE (optional): how a command other than the program under test reaches it (test-nginx):
-- MODE.spawn(ctx) runs the command instead (returns what spawn_and_wait returns and a signal that
-- came while waiting for stragglers); MODE.collect(run_dir, vg) reads the reports instead (returns
-- procs, problems, errors, unchecked); MODE.cases() the JUnit test cases; MODE.nothing: why no
-- process could have been checked.
function run_command(args, command, extra_env, mode)
   mode = mode or {}
   local fail_on = parse_fail_on(args.fail_on)
   local error_exitcode = parse_exitcode(args.error_exitcode)
   local timeout = parse_timeout(args.timeout)
   local outputs = check_outputs(args)
   local supp_entries = load_suppressions(args)
   local vg = args.engine == "valgrind" and valgrind_setup(args) or nil

   local path = resolve_command(command[1])
   if not path then
      local exists = command[1]:find("/", 1, true) and lfs.attributes(command[1], "mode")
      fail(EXIT.not_found, "%s: command not found%s", command[1],
         exists and " (" .. (exists == "file" and "not executable" or "a " .. exists) .. ")" or "")
   end
   if not vg then check_traceable(path) end
   local tracker = find_tracker()
   local run_dir = make_run_dir()

   local ok, result = xpcall(function()
      local res, late_signal
      if mode.spawn then
         res, late_signal = mode.spawn({
            run_dir = run_dir, command = command, path = path, tracker = tracker, vg = vg, jit = args.jit,
            timeout = timeout, env = with_user_env({}), lua_init = lua_init(true), spawn = spawn_and_wait,
            stragglers = tracker_stragglers})
      elseif vg then
         -- ljleak's small Valgrind library (client requests, dlclose kept a no-op), and the
         -- ljleak module in every LuaJIT process (busted's tests become Valgrind contexts).
         local env = with_user_env({LUA_INIT = lua_init(), LJLEAK_DIR = run_dir})
         local vglib = tracker:gsub("libljleak%.so$", "libljleak_vg.so")
         if lfs.attributes(vglib, "mode") == "file" then
            local preload = os.getenv("LD_PRELOAD")
            env.LD_PRELOAD = (preload and preload ~= "") and vglib .. ":" .. preload or vglib
         end
         for k, v in pairs(extra_env) do env[k] = v end
         res = valgrind_spawn(vg, command, run_dir, args.jit or "off", env, {timeout = timeout})
      else
         local preload = os.getenv("LD_PRELOAD")
         preload = (preload and preload ~= "") and tracker .. ":" .. preload or tracker
         local env = with_user_env({LD_PRELOAD = preload, LJLEAK_DIR = run_dir, LUA_INIT = lua_init()})
         if args.jit == "off" then env.LUA_INIT = valgrind.lua_init("off", env.LUA_INIT) end
         for k, v in pairs(extra_env) do env[k] = v end
         res = spawn_and_wait(path, command, env, {timeout = timeout})
         late_signal = tracker_stragglers(run_dir, res.interrupted and 1 or 10)
      end
      local interrupted = res.interrupted or (late_signal and {signal = late_signal, by = "signal"})
      local child_pid, how, status = res.pid, res.how, res.status
      local exit_status = how == "killed" and EXIT.signal_base + status or status

      local procs, problems, errors, unchecked
      if mode.collect then
         procs, problems, errors, unchecked = mode.collect(run_dir, vg)
      elseif vg then
         procs, problems = valgrind.collect(run_dir)
         unchecked = {}
      else
         procs, problems, errors, unchecked = tracker_engine.collect(run_dir, {
            child = child_pid, child_signal = how == "killed" and signal_name(status) or nil})
      end
      local pids = {}
      for _, proc in ipairs(procs) do pids[proc.pid or -1] = true end
      if vg and not mode.spawn and not pids[child_pid] then
         if how == "killed" then
            warn("%s (pid %d) was killed by %s and left no leak report%s", command[1], child_pid,
               signal_name(status), #procs > 0 and "; reporting its other processes" or "")
         else
            warn("%s (pid %d) left no leak report: Valgrind could not run it (see its message above)", command[1],
               child_pid)
         end
      end

      local rep
      if vg then
         rep = valgrind.build(procs, {command = command, exit_status = exit_status, version = version()})
      else
         rep = report.build(procs, {
            engine = "tracker", command = command, exit_status = exit_status, version = version(), errors = errors,
            symbolizer = symbolize.new({tracker = tracker}),
         })
      end
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
      local code = exit_status
      if not suppress(rep, supp_entries, args, outputs, vg and vg.depth or tracker_depth(),
                      vg and valgrind.builtin_suppressions(procs)) then
         code = EXIT.failure
      end
      -- A killed program exits 128+N whatever was found (a SIGSEGV's invalid write is still listed).
      if how ~= "killed" and error_exitcode ~= 0 and report.failing(rep, fail_on) > 0 then code = error_exitcode end
      if how ~= "killed" and error_exitcode ~= 0 and fail_on.unchecked and #unchecked > 0 then code = error_exitcode end
      if not write_outputs(outputs, rep, {show_reachable = args.show_reachable, fail_on = fail_on,
                                          cases = mode.cases and mode.cases()}) then
         code = EXIT.failure
      end
      io.stderr:write(("%s: leak check of %d process%s%s\n"):format(PROG, #procs, #procs == 1 and "" or "es",
         #unchecked > 0 and (", %d not checked"):format(#unchecked) or ""))
      warn_unchecked(unchecked, 20)
      io.stderr:write(report.format(rep, "text", {show_reachable = args.show_reachable}))
      if interrupted then
         warn("interrupted (%s): the report covers only the processes that finished", rep.interrupted)
         code = interrupted.by == "timeout" and EXIT.timeout or EXIT.signal_base + interrupted.signal
      elseif #procs == 0 and how ~= "killed" then
         warn("no process was checked%s", #unchecked > 0 and " (see above)" or
            (": " .. (mode.nothing or "the command ran no program the tracker could enter")))
         code = EXIT.failure
      end
      return code
   end, traceback)
   if args.keep_run_dir then
      warn("run directory kept: %s", run_dir)
   else
      remove_tree(run_dir)
   end
   if not ok then error(result, 0) end
   return result
end

-- `ljleak suppressions merge FILE...`: the entries of every FILE, without duplicates (same kind and
-- frames; leak kinds joined), names made unique, comments kept.
function commands.suppressions(args)
   local target
   if args.output then
      local targets, err = outfile.check({{option = "--output", path = args.output, owns = owns_suppressions,
                                           what = "a suppression file written by ljleak"}})
      if not targets then fail(EXIT.usage, "%s", err) end
      target = targets[1]
   end
   local entries, err = supp.load(args.files)
   if not entries then fail(EXIT.usage, "%s", err) end
   local merged = supp.merge(entries)
   local text = supp.format(merged, {("%s%s: %d entries (%d duplicates dropped)."):format(MERGED_HEADER,
      table.concat(args.files, ", "), #merged, #entries - #merged)})
   if target then
      local ok, werr = outfile.write(target, function(write) write(text) end)
      if not ok then fail(EXIT.failure, "%s", werr) end
   else
      io.stdout:write(text)
   end
   return EXIT.ok
end

function commands.report(args)
   local rep, err = report.read(args.file)
   if not rep then fail(EXIT.usage, "%s", err) end
   local outputs = check_outputs(args)
   -- With a report file on standard output, the summary goes to standard error.
   local summary_to = io.stdout
   for _, t in pairs(outputs) do
      if outfile.is_stdout(t) then summary_to = io.stderr end
   end
   local opts = {show_reachable = args.show_reachable, full = args.file}
   summary_to:write(report.format(rep, "text", opts))
   if not write_outputs(outputs, rep, opts) then return EXIT.failure end
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

local function main(argv)
   local before, command = split_at_dashdash(argv)
   local state = {}
   local parser = build_parser(state)
   local ok, args = parser:pparse(before)
   if state.help then
      io.stdout:write(state.help:get_help(), "\n")
      return EXIT.ok
   end
   if not ok then fail(EXIT.usage, "%s", one_line(args)) end
   if args.version then
      io.stdout:write(PROG, " ", version(), "\n")
      return EXIT.ok
   end
   if not args.command then
      fail(EXIT.usage, "a command is required (run, busted, test-nginx, report or suppressions; see ljleak --help)")
   end
   return commands[args.command](args, command)
end

function M.main(argv)
   -- libdw would ask debuginfod servers on the network for missing debug info: never.
   require("posix.stdlib").setenv("DEBUGINFOD_URLS", nil)
   local ok, result = xpcall(main, traceback, argv or {})
   if ok then return result end
   if getmetatable(result) == Failure then
      io.stderr:write(PROG, ": ", result.message, "\n")
      return result.exit
   end
   io.stderr:write(PROG, ": internal error: ", tostring(result), "\n")
   return EXIT.internal
end

-- `luajit cli.lua ARGS...`, as bin/ljleak runs it: the command line is in `arg`.
if ... ~= "ljleak.cli" then os.exit(M.main(arg), true) end

return M
