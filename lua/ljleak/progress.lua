-- A live status line on a terminal (stderr), redrawn in place while a long run goes on; silent
-- when stderr is not a terminal, so logs and CI output get nothing extra.
local unistd = require "posix.unistd"

local M = {}

local Line = {}
Line.__index = Line

-- A status line on STREAM (default io.stderr, whose descriptor is FD, default 2). It shows
-- nothing unless FD is a terminal (or OPTS.force is set).
function M.new(opts)
   opts = opts or {}
   local fd = opts.fd or 2
   return setmetatable({
      stream = opts.stream or io.stderr,
      enabled = opts.force or unistd.isatty(fd) == 1,
      shown = false,
   }, Line)
end

-- "m:ss" or "h:mm:ss" for SECONDS.
function M.clock(seconds)
   seconds = math.floor(seconds)
   local h, m, s = math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60
   if h > 0 then return ("%d:%02d:%02d"):format(h, m, s) end
   return ("%d:%02d"):format(m, s)
end

-- Replace the line with TEXT.
function Line:update(text)
   if not self.enabled then return end
   self.stream:write("\r", text, "\27[K")
   self.stream:flush()
   self.shown = true
end

-- Erase the line, so that what is written next starts on a clean line.
function Line:clear()
   if not self.enabled or not self.shown then return end
   self.stream:write("\r\27[K")
   self.stream:flush()
   self.shown = false
end

return M
