-- The Valgrind engine: the memcheck command line ljleak runs (one XML file per process in the run
-- directory, read by ljleak.vgxml), its environment, a status line while it runs, and waiting for
-- the processes that outlive the command.
local lfs = require "lfs"
local lxp = require "lxp"
local ptime = require "posix.time"

local const = require "ljleak.const"
local engines = require "ljleak.engine"
local process = require "ljleak.process"
local progress = require "ljleak.progress"
local vgxml = require "ljleak.vgxml"
local util = require "ljleak.util"

local M = {name = "valgrind"}

M.DEFAULT_NUM_CALLERS = 12   -- Valgrind's default --num-callers


-- Options a user may not give through --valgrind-opts, and why: ljleak sets them itself, or they
-- change what it reads (the leak kinds Valgrind checks and shows, where its output goes, which
-- processes write a report) or the exit status it chooses.
local SET = "is set by ljleak and cannot be changed"
local KINDS = "changes the leak kinds Valgrind checks or shows; ljleak needs all of them (use ljleak's "
   .. "--fail-on, --show-reachable and suppressions)"
local OUTPUT = "changes where Valgrind's output goes; ljleak reads one XML file per process from its run directory"
local REFUSED = {
   ["--tool"] = SET, ["--xml"] = SET, ["--xml-file"] = SET, ["--leak-check"] = SET, ["--show-leak-kinds"] = SET,
   ["--trace-children"] = SET, ["--error-limit"] = SET, ["--keep-debuginfo"] = SET, ["--soname-synonyms"] = SET,
   ["--xtree-memory"] = SET, ["--xtree-memory-file"] = SET,
   ["--show-reachable"] = KINDS, ["--show-possibly-lost"] = KINDS, ["--errors-for-leak-kinds"] = KINDS,
   ["--xtree-leak"] = "makes Valgrind write its leak check to an xtree file instead of its XML",
   ["--xml-fd"] = OUTPUT, ["--xml-socket"] = OUTPUT, ["--log-fd"] = OUTPUT, ["--log-file"] = OUTPUT,
   ["--log-socket"] = OUTPUT,
   ["--child-silent-after-fork"] = "would leave forked children without a report",
   ["--gen-suppressions"] = "is ljleak's own option (--gen-suppressions=FILE); Valgrind's asks on the terminal",
   ["--error-exitcode"] = "is ljleak's own option: ljleak chooses the exit status",
   ["--exit-on-first-error"] = "stops the program at its first error, before its leak check",
   ["-h"] = "makes Valgrind print its help instead of running the program", ["--help"] = "makes Valgrind print "
      .. "its help instead of running the program", ["--version"] = "makes Valgrind print its version instead of "
      .. "running the program",
}

M.REFUSED = REFUSED

-- Valgrind copies --xml-user-comment into its XML as it is: text that is not well-formed there
-- (a & or < of its own) is escaped, so that the comment shows as written.
local function user_comment(value)
   local parser = lxp.new({})
   local ok = parser:parse("<c>" .. value .. "</c>")
   if ok then ok = parser:parse() end
   pcall(parser.close, parser)
   if ok then return value end
   return (value:gsub("[&<>]", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;"}))
end

-- -- The command -----------------------------------------------------------------------------

-- The valgrind program: $LJLEAK_VALGRIND, or `valgrind` on PATH. Nil and a message if missing.
function M.find()
   local path = os.getenv(const.ENV.VALGRIND)
   if path and path ~= "" then
      if lfs.attributes(path, "mode") == "file" then return path end
      return nil, ("%s=%s: no such file"):format(const.ENV.VALGRIND, path)
   end
   for dir in ((os.getenv("PATH") or "/usr/bin:/bin") .. ":"):gmatch("([^:]*):") do
      local candidate = (dir == "" and "." or dir) .. "/valgrind"
      if lfs.attributes(candidate, "mode") == "file" then return candidate end
   end
   return nil, "valgrind was not found on PATH: install it (Debian/Ubuntu: apt-get install valgrind; "
      .. "Fedora: dnf install valgrind)"
end

-- Split the text of --valgrind-opts into words. Returns the words and the --num-callers they set
-- (or nil), or nil and a one-line message naming an option ljleak refuses (M.REFUSED says why).
function M.parse_extra(texts)
   local words, num_callers = {}, nil
   for _, text in ipairs(texts or {}) do
      for w in text:gmatch("%S+") do
         local name = w:match("^(%-%-?[^=]+)")
         if not name then
            return nil, ("--valgrind-opts: '%s' is not an option (Valgrind would run it as the program)"):format(w)
         end
         if REFUSED[name] then return nil, ("--valgrind-opts: %s %s"):format(name, REFUSED[name]) end
         if name == "--num-callers" then
            num_callers = tonumber(w:match("=(%d+)$"))
            if not num_callers then return nil, ("--valgrind-opts: bad %s"):format(w) end
         elseif name == "--xml-user-comment" then
            w = name .. "=" .. user_comment(w:sub(#name + 2))
         end
         words[#words + 1] = w
      end
   end
   return words, num_callers
end

-- The environment variable whose value is in each XML file's name, beside the pid: Valgrind
-- expands only %p (the pid, which a process in another PID namespace shares with others),
-- %n (a count that starts again at 1 in each process) and %q{VAR} (VAR's value: a process whose
-- environment lacks VAR does not start). libljleak_vg.so gives each forked child a new value
-- (pthread_atfork) and puts the variable back into an environment given to exec without it.
M.ID_VAR = const.ENV.VG_ID

-- The first process's value; 16 hex digits, as libljleak_vg.so writes them.
M.FIRST_ID = "0000000000000000"

-- The valgrind argv (without CMD) for a run writing its XML into DIR. OPTS.valgrind: the program;
-- OPTS.extra: more options (from M.parse_extra), put last.
function M.command_line(opts)
   local argv = {opts.valgrind or "valgrind",
      "--tool=memcheck",
      "--leak-check=full",
      "--show-leak-kinds=all",
      "--keep-debuginfo=yes",        -- else frames in libraries unloaded before exit are ???
      "--demangle=no",               -- C++ names as the tracker has them; demangled as the tracker does
      "--trace-children=yes",
      "--error-limit=no",            -- ljleak applies the suppressions, so every error must come out
      "--xml=yes",
      -- ljleak's own allocation functions (libljleak_vg.so) must run: they give records Lua frames.
      "--soname-synonyms=somalloc=nouserintercepts",
      -- the heap summary (its XML has none): the totals of xt.PID.ID.kcg, written at exit; a % of
      -- DIR's own (from TMPDIR) would be expanded: %% is one %.
      "--xtree-memory=full",
      "--xtree-memory-file=" .. opts.dir:gsub("%%", "%%%%") .. "/xt.%p.%q{" .. M.ID_VAR .. "}.kcg",
      "-q",                          -- which would otherwise name that file on stderr
      -- the frames asked for (default 12), plus the two of ljleak's the reader takes out again
      "--num-callers=" .. ((opts.num_callers or M.DEFAULT_NUM_CALLERS) + 2),
      -- vg.PID.ID.xml
      "--xml-file=" .. opts.dir:gsub("%%", "%%%%") .. "/vg.%p.%q{" .. M.ID_VAR .. "}.xml",
   }
   local callers = #argv - 1
   for _, w in ipairs(opts.extra or {}) do
      local n = w:match("^%-%-num%-callers=(%d+)$")
      if n then argv[callers] = "--num-callers=" .. (tonumber(n) + 2) else argv[#argv + 1] = w end
   end
   return argv
end

-- -- The engine's interface (ljleak.engine) -------------------------------------------------------

-- What a Valgrind run needs, checked before anything runs: valgrind itself, and --valgrind-opts.
function M.prepare(args)
   local path, err = M.find()
   if not path then util.fail("usage", "--engine=valgrind: %s", err) end
   local extra, num_callers = M.parse_extra(args.valgrind_opts)
   if not extra then util.fail("usage", "%s", num_callers) end
   return {valgrind = path, extra = extra, depth = num_callers or M.DEFAULT_NUM_CALLERS, jit = args.jit or "off"}
end

function M.check() end   -- Valgrind runs static and setuid programs too

-- valgrind, with its options, then COMMAND; the environment: ljleak's small Valgrind library
-- preloaded (client requests, dlclose kept a no-op), the ljleak module in every LuaJIT process
-- (busted's tests become Valgrind contexts), the JIT off unless --jit=on.
function M.command(state, command, _, run_dir)
   state.command = command
   local argv = M.command_line({valgrind = state.valgrind, dir = run_dir, extra = state.extra})
   for _, a in ipairs(command) do argv[#argv + 1] = a end
   local env = engines.with_user_env({LUA_INIT = engines.lua_init(), LJLEAK_DIR = run_dir})
   local vglib = state.library:gsub("libljleak%.so$", "libljleak_vg.so")
   if lfs.attributes(vglib, "mode") == "file" then env.LD_PRELOAD = engines.preload(vglib) end
   env[M.ID_VAR] = M.FIRST_ID
   env.LUA_INIT = engines.with_jit(state.jit, env.LUA_INIT or engines.user_env("LUA_INIT"))
   return state.valgrind, argv, env
end

-- On a terminal: the time, the processes running and the records so far, about twice a second.
function M.ticker(_, run_dir, status_line)
   if not status_line.enabled then return nil end
   local watch, start, last = M.watcher(run_dir), process.now(), -1
   return function()
      local elapsed = process.now() - start
      if elapsed - last < 0.5 then return end
      last = elapsed
      local running, records = watch()
      status_line:update(("ljleak: valgrind %s elapsed, %d process%s running, %d record%s so far"):format(
         progress.clock(elapsed), running, running == 1 and "" or "es", records, records == 1 and "" or "s"))
   end
end

-- Processes that outlive the command may still be writing their report: wait for them (at most
-- SECONDS: default 10, 1 when INTERRUPTED).
function M.after(_, run_dir, interrupted, seconds)
   for _, pid in ipairs(M.wait_for_stragglers(run_dir, seconds or (interrupted and 1 or 10))) do
      io.stderr:write(("ljleak: process %d is still running; its report is not complete\n"):format(pid))
   end
end

-- The processes of RUN_DIR's XML files. The command's own process (RESULT: process.run's) that
-- left none is said on stderr: killed, or Valgrind could not run it.
function M.collect(state, run_dir, result)
   local procs, problems = vgxml.collect(run_dir)
   local found = false
   for _, proc in ipairs(procs) do found = found or proc.pid == result.pid end
   if not found then
      local name = state.command[1]
      if result.how == "killed" then
         io.stderr:write(("ljleak: %s (pid %d) was killed by %s and left no leak report%s\n"):format(name, result.pid,
            process.signal_name(result.status), #procs > 0 and "; reporting its other processes" or ""))
      else
         io.stderr:write(("ljleak: %s (pid %d) left no leak report: Valgrind could not run it (see its message "
            .. "above)\n"):format(name, result.pid))
      end
   end
   return procs, problems, {}, {}
end

function M.depth(state)
   return state.depth
end

-- Valgrind's own default suppressions (default.supp) used in PROCS: {name, count}, for the
-- summary's table (Valgrind drops what they match, so only its counts are known).
function M.builtin_suppressions(procs)
   local list, by_name = {}, {}
   for _, proc in ipairs(procs) do
      for _, sc in ipairs(proc.suppcounts) do
         local u = by_name[sc.name]
         if not u then
            u = {name = sc.name, file = "valgrind's default.supp", count = 0, records = 0}
            by_name[sc.name] = u
            list[#list + 1] = u
         end
         u.count = u.count + sc.count
      end
   end
   return list
end

-- -- Progress --------------------------------------------------------------------------------

local alive = util.alive

-- A watcher of RUN_DIR's XML files while Valgrind runs: each call returns how many processes are
-- running (their XML is not finished and they are alive) and how many records they wrote so far,
-- and the pids of those running. Reads only what was appended since the last call.
function M.watcher(run_dir)
   local files = {}
   return function()
      local running, records, pids = 0, 0, {}
      local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
      if not ok then return 0, 0, pids end
      for n in iter, dir_obj do
         local pid = tonumber(n:match(vgxml.XML_NAME) or "")
         if pid then
            local st = files[n]
            if not st then
               st = {offset = 0, records = 0, tail = "", done = false}
               files[n] = st
            end
            local size = lfs.attributes(run_dir .. "/" .. n, "size") or 0
            if size < st.offset then st.offset, st.records, st.tail, st.done = 0, 0, "", false end
            if size > st.offset then
               local f = io.open(run_dir .. "/" .. n, "rb")
               if f then
                  f:seek("set", st.offset)
                  local data = f:read(size - st.offset) or ""
                  f:close()
                  st.offset = st.offset + #data
                  local text = st.tail .. data
                  local _, count = text:gsub("<error>", "")
                  local _, old = st.tail:gsub("<error>", "")
                  st.records = st.records + count - old
                  if text:find("</valgrindoutput>", 1, true) then st.done = true end
                  st.tail = text:sub(-20)
               end
            end
            records = records + st.records
            if not st.done and alive(pid) then
               running = running + 1
               pids[#pids + 1] = pid
            end
         end
      end
      return running, records, pids
   end
end

-- After the command ended, wait up to TIMEOUT seconds for processes it left running (children
-- that outlive it) to finish their XML. Returns the pids still running then.
function M.wait_for_stragglers(run_dir, timeout)
   local watch = M.watcher(run_dir)
   local waited = 0
   while true do
      local running, _, pids = watch()
      if running == 0 or waited >= timeout then return pids end
      ptime.nanosleep({tv_sec = 0, tv_nsec = 100000000})
      waited = waited + 0.1
   end
end

return M
