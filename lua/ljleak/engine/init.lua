-- The engines behind `ljleak run`, one module each (ljleak.engine.tracker, .valgrind), all with one
-- interface, and what they share: the program's environment, and its LUA_INIT (engine/boot.lua).
--
-- engine.prepare(args) -> state         before anything runs: checks the engine's own options
-- engine.check(state, path)             fails if the engine cannot run the program at PATH
-- engine.command(state, command, path, run_dir) -> path, argv, env   what to spawn, env added
-- engine.ticker(state, run_dir, status_line, on_report) -> function or nil   called while it runs
--                                      (updates STATUS_LINE; may read the reports written so far,
--                                      and give each to ON_REPORT(proc) once)
-- engine.after(state, run_dir, interrupted, seconds) -> signal or nil   waits (at most SECONDS: by
--                                      default 10, 1 when INTERRUPTED) for processes that outlive it
-- engine.collect(state, run_dir, result) -> procs, problems, errors, unchecked   (ljleak.raw's shape)
-- engine.depth(state) -> frames kept per stack (suppression entries are cut to as many lines)
-- engine.builtin_suppressions(procs) -> the engine's own suppressions used ({name, count...})
-- Optional: engine.interval (seconds between ticks, default 0.25; or a function of the seconds
-- the command has run, giving them); engine.tests(state) -> the
-- tests the command ran (instead of the run directory's tests files: read_tests' shape);
-- engine.nothing: why no process could have been checked.
local cjson = require "cjson"
local lfs = require "lfs"
local stdlib = require "posix.stdlib"

local const = require "ljleak.const"
local util = require "ljleak.util"

local M = {}

M.NAMES = {"tracker", "valgrind"}

function M.get(name)
   return require("ljleak.engine." .. name)
end

-- -- The user's Lua environment --------------------------------------------------------------
-- bin/ljleak keeps the user's LUA_INIT, LUA_PATH and LUA_CPATH out of the CLI's own LuaJIT and
-- saves them as LJLEAK_SAVED_NAME ("=value" when set, empty when not). The command gets them back
-- as they were: unset ones unset, not the CLI's own paths.

local USER_LUA_VARS = {"LUA_INIT", "LUA_PATH", "LUA_CPATH"}

function M.user_env(name)
   local saved = os.getenv("LJLEAK_SAVED_" .. name)
   if saved then return saved ~= "" and saved:sub(2) or nil end
   return os.getenv(name)   -- a CLI run without bin/ljleak
end

-- ENV with the user's Lua variables restored (unless ENV sets them) and the saved copies removed.
function M.with_user_env(env)
   for _, name in ipairs(USER_LUA_VARS) do
      if env[name] == nil then env[name] = M.user_env(name) or false end
      env["LJLEAK_SAVED_" .. name] = false
   end
   return env
end

-- -- LUA_INIT ---------------------------------------------------------------------------------

local BOOT = [[
-- ljleak's bootstrap (lua/ljleak/engine/boot.lua); the program's own LUA_INIT follows
local boot = loadfile(%q) if boot then boot(%q, %q) end]]

-- LUA_INIT for the command: every LuaJIT process runs ljleak's bootstrap first (engine/boot.lua,
-- found where this CLI found its modules), then the user's own LUA_INIT (unless WITHOUT_USER: for
-- the Lua states of a program that reads no LUA_INIT). Nil when there is none.
function M.lua_init(without_user)
   local module = package.searchpath("ljleak", package.path)
   local core = package.searchpath("ljleak.core", package.cpath)
   local user = not without_user and M.user_env("LUA_INIT")
   -- absolute: a process may start in another directory (nginx, a test that changes directory)
   local dir = module and module:match("^(.*)/ljleak/[^/]*$")
   dir = dir and (stdlib.realpath(dir) or dir)
   core = core and (stdlib.realpath(core) or core)
   local code = dir and core and BOOT:format(dir .. "/ljleak/engine/boot.lua", dir, core) or ""
   if user and user ~= "" then
      code = code .. "\n" .. (user:sub(1, 1) == "@" and ("dofile(%q)"):format(user:sub(2)) or user)
   end
   return code ~= "" and code or nil
end

-- LUA_INIT CODE (the user's, or M.lua_init's) for a program whose LuaJIT runs with its JIT JIT
-- ("off": every LuaJIT process turns its JIT off before anything runs; other Lua interpreters skip
-- it). Nil when there is nothing to run.
function M.with_jit(jit, code)
   local parts = {}
   if jit == "off" then parts[1] = "if jit then jit.off() end" end
   if code and code ~= "" then
      parts[#parts + 1] = code:sub(1, 1) == "@" and ("dofile(%q)"):format(code:sub(2)) or code
   end
   return #parts > 0 and table.concat(parts, "\n") or nil
end

-- LD_PRELOAD with LIB first, then what the user preloads.
function M.preload(lib)
   local preload = os.getenv("LD_PRELOAD")
   return (preload and preload ~= "") and lib .. ":" .. preload or lib
end

-- -- The tests the program ran ---------------------------------------------------------------
-- A test runner's integration in the program (ljleak.busted) appends a JSON object a line to
-- RUN_DIR/tests.PID.jsonl for each test it ran: {name, file, line, time, status} (both engines).

-- The tests of RUN_DIR's tests.PID.jsonl files (by pid, then in the order they ran), each with its
-- pid; and problems ({pid, file, message}) for the lines that are not such a record.
function M.read_tests(run_dir)
   local tests, problems, files = {}, {}, {}
   local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
   if not ok then return tests, problems end
   for name in iter, dir_obj do
      local pid = tonumber(name:match("^" .. const.TESTS_FILE:gsub("%.", "%%."):gsub("%%d", "(%%d+)") .. "$") or "")
      if pid then files[#files + 1] = pid end
   end
   table.sort(files)
   for _, pid in ipairs(files) do
      local path = run_dir .. "/" .. const.TESTS_FILE:format(pid)
      local n = 0
      for line in io.lines(path) do
         n = n + 1
         local dok, t = pcall(cjson.decode, line)
         if dok and type(t) == "table" and type(t.name) == "string" then
            for k, v in pairs(t) do
               if v == cjson.null then t[k] = nil end
            end
            t.pid = pid
            tests[#tests + 1] = t
         elseif line ~= "" then
            problems[#problems + 1] = {pid = pid, file = path, message = ("%s:%d: not a test record"):format(path, n)}
         end
      end
   end
   return tests, problems
end

-- -- ljleak's libraries -------------------------------------------------------------------------

local function dirname(path)
   local dir = path:match("^(.*)/[^/]*$")
   if dir == nil then return "." end
   return dir == "" and "/" or dir
end

-- Absolute path of the tracker, libljleak.so: $LJLEAK_PRELOAD, or next to the ljleak.core module.
function M.tracker_library()
   local path = os.getenv(const.ENV.PRELOAD)
   if not path or path == "" then
      local core_path = package.searchpath("ljleak.core", package.cpath)
      if not core_path then
         util.fail("failure", "cannot find the ljleak.core module on package.cpath, nor the tracker "
            .. "library next to it (build with make, or set LJLEAK_PRELOAD)")
      end
      path = dirname(core_path) .. "/libljleak.so"
   end
   if lfs.attributes(path, "mode") ~= "file" then
      util.fail("failure", "tracker library %s not found (build with make, or set LJLEAK_PRELOAD)", path)
   end
   path = stdlib.realpath(path) or path
   if path:find("[ :]") then
      util.fail("failure", "tracker library path %s contains a space or colon, which LD_PRELOAD cannot express",
         path)
   end
   return path
end

return M
