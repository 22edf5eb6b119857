-- `luajit -lljleak script.lua` without the tracker loaded: run the same command line again under
-- `ljleak run`, which preloads it (the launcher next to the modules, in PATH, or LJLEAK_BIN).
local ffi = require "ffi"

local ENV = require("ljleak.const").ENV

local M = {}

local function read_cmdline()
   local f = io.open("/proc/self/cmdline", "rb")
   if not f then return nil end
   local s = f:read("*a")
   f:close()
   local argv = {}
   for a in s:gmatch("([^%z]*)%z") do argv[#argv + 1] = a end
   return #argv > 0 and argv or nil
end

local function file_exists(path)
   local f = io.open(path, "rb")
   if f then f:close() end
   return f ~= nil
end

-- Where `make install` put the launcher (it writes the path over the @...@ line).
local INSTALLED_BINDIR = "@BINDIR@"

-- The launcher: $LJLEAK_BIN; the one of this module's checkout (lua/ljleak -> bin); the one of
-- this module's tree (PREFIX/share/lua/5.1/ljleak -> PREFIX/bin, as `make install PREFIX=...` and
-- a luarocks tree lay them out); where `make install` put it (BINDIR=...); else `ljleak` in PATH.
local function find_launcher()
   local env = os.getenv(ENV.BIN)
   if env then return env end
   local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
   local candidates = {}
   if here then
      candidates[1] = here .. "/../../bin/ljleak"
      candidates[2] = here .. "/../../../../bin/ljleak"
   end
   candidates[#candidates + 1] = INSTALLED_BINDIR .. "/ljleak"
   for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do candidates[#candidates + 1] = dir .. "/ljleak" end
   for _, path in ipairs(candidates) do
      if file_exists(path) then return path end
   end
end

-- `luajit -lljleak script.lua` without the tracker: run the same command line again under
-- `ljleak run`, which preloads it.
local function reexec()
   ffi.cdef [[
    int execv(const char *path, char *const argv[]);
    int setenv(const char *name, const char *value, int overwrite);
  ]]
   local argv = read_cmdline()
   local launcher = find_launcher()
   if os.getenv(ENV.REEXEC) then
      error("ljleak: the tracker is still not loaded after re-running under `ljleak run`", 0)
   end
   if not argv or not launcher then
      error("ljleak: cannot re-run this program under the tracker (" .. (argv and "no ljleak launcher found"
         or "/proc/self/cmdline unreadable") .. "); run it with `ljleak run -- ...`", 0)
   end
   local argv2 = {launcher, "run", "--"}
   for _, a in ipairs(argv) do argv2[#argv2 + 1] = a end
   local cargv = ffi.new("char *[?]", #argv2 + 1)
   local keep = {}
   for i, a in ipairs(argv2) do
      keep[i] = ffi.new("char[?]", #a + 1, a)
      cargv[i - 1] = keep[i]
   end
   ffi.C.setenv(ENV.REEXEC, "1", 1)
   io.stdout:flush()
   io.stderr:flush()
   ffi.C.execv(launcher, cargv)
   error("ljleak: could not re-run under the tracker: execv failed", 0)
end


-- Re-run under the tracker if this process was started as `luajit -lljleak ...` (and is not
-- already under an ljleak run); else nothing.
function M.if_asked()
   local cmd = not os.getenv(ENV.DIR) and read_cmdline() or {}
   local i = 2
   while cmd[i] and cmd[i]:sub(1, 1) == "-" do  -- luajit's options, up to the script
      local a = cmd[i]
      if a == "-lljleak" or (a == "-l" and cmd[i + 1] == "ljleak") then return reexec() end
      i = i + ((a == "-e" or a == "-l" or a == "-j" or a == "-b") and 2 or 1)
   end
end

return M
