-- Small helpers shared by ljleak's Lua modules: expected failures, reading files, live processes,
-- nested tables.
local M = {}

-- -- Expected failures ---------------------------------------------------------------------------
-- Raised as {exit = NAME, message = text}: NAME is a key of ljleak.cli's exit-code table (usage,
-- not_found, failure); ljleak.cli turns one into a line on stderr and that exit code. Anything else
-- raised is a bug and gets a traceback.

local Failure = {}
Failure.__index = Failure

function M.fail(name, fmt, ...)
   error(setmetatable({exit = name, message = fmt:format(...)}, Failure), 0)
end

function M.is_failure(err)
   return getmetatable(err) == Failure
end

-- xpcall handler: keep a failure as it is, give anything else its traceback.
function M.traceback(err)
   if M.is_failure(err) then return err end
   return debug.traceback(tostring(err), 2)
end

-- The whole content of the file at PATH, or nil and a message.
function M.read_file(path)
   local f, err = io.open(path, "rb")
   if not f then return nil, err end
   local text, rerr = f:read("*a")
   f:close()
   if not text then return nil, rerr end
   return text
end

-- A function(path) that reads the file at PATH and returns parse(text, path), or nil and a
-- message when it cannot be read.
function M.reader(parse)
   return function(path)
      local text, err = M.read_file(path)
      if not text then return nil, err end
      return parse(text, path)
   end
end

-- "N WORDs": "1 block", "2 blocks", "3 processes".
function M.plural(n, word)
   return ("%d %s%s"):format(n, word, n == 1 and "" or (word:match("s$") and "es" or "s"))
end

-- T[K], made a table if it was not.
function M.sub(t, k)
   local s = t[k]
   if not s then
      s = {}
      t[k] = s
   end
   return s
end

-- -- The JIT compiler in the command ---------------------------------------------------------
-- `ljleak` runs with LuaJIT's JIT compiler off (cli.lua): most of its work is a few milliseconds
-- of code run once, which compiling traces makes slower (the report of one busted process: 10 ms
-- with it, 5 ms without). jit_for(BYTES), about to read BYTES of reports, turns it on when that is
-- enough for compiled code to pay (a raw report of 10,000 stacks, 1.4 MB: 410 ms with it, 560 ms
-- without). Not for the program under test: its LuaJIT is its own.
M.JIT_BYTES = 256 * 1024

function M.jit_for(bytes)
   if jit and bytes >= M.JIT_BYTES and not jit.status() then jit.on() end
end

-- Is process PID alive (a zombie is not)?
function M.alive(pid)
   local f = io.open("/proc/" .. pid .. "/stat", "rb")
   if not f then return require("posix.signal").kill(pid, 0) == 0 end
   local stat = f:read("*a") or ""
   f:close()
   return stat:match("%) (%a)") ~= "Z"
end

return M
