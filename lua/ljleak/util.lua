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

-- Is process PID alive (a zombie is not)?
function M.alive(pid)
   local f = io.open("/proc/" .. pid .. "/stat", "rb")
   if not f then return require("posix.signal").kill(pid, 0) == 0 end
   local stat = f:read("*a") or ""
   f:close()
   return stat:match("%) (%a)") ~= "Z"
end

return M
