-- A small terminal for the specs: what a VT100-like terminal of ROWS x COLS shows after a stream of
-- output (the subset of control sequences a program and ljleak's status line use: CR, LF, BS,
-- DECSC/DECRC, IND, RI, CUU/CUD/CUF/CUB, CUP, CHA, EL, ED, DECSTBM; others are skipped). Lines
-- that scroll off the top are kept, so that everything written can be read back in order.
local M = {}

local Screen = {}
Screen.__index = Screen

function M.new(rows, cols)
   local s = setmetatable({rows = rows, cols = cols, r = 1, c = 1, top = 1, bottom = rows, lines = {},
                           history = {}}, Screen)
   for i = 1, rows do s.lines[i] = {} end
   return s
end

-- Scroll the region up by one line (the top line goes to the history when it is the screen's).
function Screen:scroll_up()
   local gone = table.remove(self.lines, self.top)
   if self.top == 1 then self.history[#self.history + 1] = gone end
   table.insert(self.lines, self.bottom, {})
end

function Screen:scroll_down()
   table.remove(self.lines, self.bottom)
   table.insert(self.lines, self.top, {})
end

function Screen:line_feed()
   if self.r == self.bottom then
      self:scroll_up()
   elseif self.r < self.rows then
      self.r = self.r + 1
   end
end

function Screen:put(ch)
   if self.c > self.cols then   -- the line is full: wrap
      self.c = 1
      self:line_feed()
   end
   self.lines[self.r][self.c] = ch
   self.c = self.c + 1
end

local function clamp(v, lo, hi)
   return math.max(lo, math.min(hi, v))
end

function Screen:csi(params, final)
   local args = {}
   for p in (params .. ";"):gmatch("([^;]*);") do args[#args + 1] = tonumber(p) end
   local n = args[1] or 1
   if final == "A" then
      self.r = math.max(self.r >= self.top and self.top or 1, self.r - n)
   elseif final == "B" then
      self.r = math.min(self.r <= self.bottom and self.bottom or self.rows, self.r + n)
   elseif final == "C" then
      self.c = clamp(self.c + n, 1, self.cols)
   elseif final == "D" then
      self.c = clamp(self.c - n, 1, self.cols)
   elseif final == "G" then
      self.c = clamp(n, 1, self.cols)
   elseif final == "H" or final == "f" then
      self.r, self.c = clamp(args[1] or 1, 1, self.rows), clamp(args[2] or 1, 1, self.cols)
   elseif final == "K" then
      local line, mode = self.lines[self.r], args[1] or 0
      for i = 1, self.cols do
         if (mode == 0 and i >= self.c) or (mode == 1 and i <= self.c) or mode == 2 then line[i] = nil end
      end
   elseif final == "J" then
      local mode = args[1] or 0
      for row = 1, self.rows do
         if (mode == 0 and row > self.r) or (mode == 1 and row < self.r) or mode == 2 then self.lines[row] = {} end
      end
      if mode == 0 then self:csi("0", "K") end
   elseif final == "r" then
      local top, bottom = args[1] or 1, args[2] or self.rows
      if top < bottom and bottom <= self.rows then self.top, self.bottom = top, bottom end
      self.r, self.c = 1, 1
   end
end

-- Feed the terminal DATA (bytes as they reached it).
function Screen:feed(data)
   local i, n = 1, #data
   while i <= n do
      local ch = data:sub(i, i)
      if ch == "\27" then
         local nxt = data:sub(i + 1, i + 1)
         if nxt == "[" then
            local params, final, e = data:match("^([%d;?]*)([%a@`])()", i + 2)
            if final then
               self:csi(params, final)
               i = e
            else
               i = i + 2
            end
         else
            if nxt == "7" then
               self.saved = {self.r, self.c}
            elseif nxt == "8" and self.saved then
               self.r, self.c = self.saved[1], self.saved[2]
            elseif nxt == "D" then
               self:line_feed()
            elseif nxt == "M" then
               if self.r == self.top then self:scroll_down() elseif self.r > 1 then self.r = self.r - 1 end
            end
            i = i + 2
         end
      else
         if ch == "\r" then
            self.c = 1
         elseif ch == "\n" then
            self:line_feed()
         elseif ch == "\b" then
            self.c = math.max(1, self.c - 1)
         elseif ch:byte() >= 32 then
            self:put(ch)
         end
         i = i + 1
      end
   end
end

local function text_of(line, cols)
   local t = {}
   for i = 1, cols do t[i] = line[i] or " " end
   return (table.concat(t):gsub("%s+$", ""))
end

-- Every line written, in order: those scrolled off the top, then the screen's (trailing blank
-- lines left out).
function Screen:all_lines()
   local out = {}
   for _, line in ipairs(self.history) do out[#out + 1] = text_of(line, self.cols) end
   for _, line in ipairs(self.lines) do out[#out + 1] = text_of(line, self.cols) end
   while #out > 0 and out[#out] == "" do out[#out] = nil end
   return out
end

-- The screen's row ROW as text.
function Screen:row(row)
   return text_of(self.lines[row], self.cols)
end

return M
