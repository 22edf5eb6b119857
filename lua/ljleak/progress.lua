-- A live status line on a terminal (stderr) while a long run goes on, on the terminal's last row,
-- which is kept out of the scrolling region meanwhile (as apt's progress bar is): the program's own
-- output scrolls above it, and neither writes over the other. Silent when stderr is not a terminal.
local unistd = require "posix.unistd"

local M = {}

local ESC = "\27"
local SAVE, RESTORE = ESC .. "7", ESC .. "8"   -- the cursor (DECSC, DECRC)

-- The size of the terminal FD is: rows, columns; nil if unknown.
local function winsize(fd)
   local ok, core = pcall(require, "ljleak.core")
   if ok and core.winsize then return core.winsize(fd) end
end

local Line = {}
Line.__index = Line

-- A status line on STREAM (default io.stderr, whose descriptor is FD, default 2). It shows
-- nothing unless FD is a terminal (or OPTS.force is set) of at least 3 rows.
function M.new(opts)
   opts = opts or {}
   local fd = opts.fd or 2
   return setmetatable({
      stream = opts.stream or io.stderr,
      fd = fd,
      enabled = opts.force or unistd.isatty(fd) == 1,
      size = opts.size or winsize,
      rows = nil,        -- the terminal's rows while the last one is reserved
   }, Line)
end

-- "m:ss" or "h:mm:ss" for SECONDS.
function M.clock(seconds)
   seconds = math.floor(seconds)
   local h, m, s = math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60
   if h > 0 then return ("%d:%02d:%02d"):format(h, m, s) end
   return ("%d:%02d"):format(m, s)
end

function Line:write(s)
   self.stream:write(s)
   self.stream:flush()
end

-- Keep the last of ROWS rows out of the scrolling region, the cursor where the program left it:
-- down a line (the screen scrolls if it was on the last row; IND keeps the column), back up, then
-- the region set (which homes the cursor) between a save and a restore of the cursor.
local function reserve(rows)
   return ESC .. "D" .. ESC .. "[1A" .. SAVE .. ESC .. "[1;" .. (rows - 1) .. "r" .. RESTORE
end

-- Replace the line with TEXT (cut to the terminal's width).
function Line:update(text)
   if not self.enabled then return end
   local rows, cols = self.size(self.fd)
   if not rows or rows < 3 then return end
   local out = {}
   if rows ~= self.rows then   -- the first time, or the terminal was resized
      out[#out + 1] = reserve(rows)
      self.rows = rows
   end
   out[#out + 1] = SAVE .. ESC .. "[" .. rows .. ";1H" .. ESC .. "[2K" .. text:sub(1, cols - 1) .. RESTORE
   self:write(table.concat(out))   -- one write: the program's own writes do not come in between
end

-- Erase the line and give the terminal its whole height back, the cursor where it was.
function Line:clear()
   if not self.rows then return end
   self:write(SAVE .. ESC .. "[r" .. ESC .. "[" .. self.rows .. ";1H" .. ESC .. "[2K" .. RESTORE)
   self.rows = nil
end

return M
