-- Turns the raw report's sites (module index + offset) into frames with function, file and line.
-- One libdw symbolizer (ljleak.core) per object path, and one answer per (path, offset), are cached.
--
-- A frame: {["function"] = "make_thing", file = "thing.c", dir = "/src", line = 12,
--           object = "/path/libthing.so", offset = "0x1167"}        -- fields nil where unknown;
-- or, for an address in no loaded object (JIT code or unknown): {address = "0x7f1c2e0010a0"}.
-- `offset` is the return address's offset from the object's load bias, as in the raw file.
-- A function inlined at a call is a frame of its own, with `inlined = true` (Symbolizer:frames_at).
-- A C++ function has its demangled name in `function` and its linkage name in `mangled`.
-- Stacks end at `main`, as Valgrind shows them: the frames of the C runtime below it are dropped.
local sub = require("ljleak.util").sub

local M = {}

-- ljleak.core, or false when it cannot be loaded.
local core_module

local function load_core()
   if core_module == nil then
      local ok, mod = pcall(require, "ljleak.core")
      core_module = ok and mod or false
   end
   return core_module
end

-- -- C++ names -------------------------------------------------------------------------------

local demangled = {}   -- linkage name -> demangled name, or false

-- The demangled form of NAME (an Itanium C++ ABI name, "_Z..."), or nil when NAME is not one or
-- no demangler is available (ljleak.core's, through libstdc++).
function M.demangle(name)
   local d = demangled[name]
   if d == nil then
      local core = name:sub(1, 2) == "_Z" and load_core()
      d = core and core.demangle(name) or false
      demangled[name] = d
   end
   return d or nil
end

-- Set FRAME's function from the symbol NAME (nil: unknown): the demangled name to show, and the
-- linkage name in `mangled` when it differs. Returns FRAME.
function M.name_frame(frame, name)
   local d = name and M.demangle(name)
   frame["function"], frame.mangled = d or name, d and name or nil
   return frame
end

-- -- Symbolizing -----------------------------------------------------------------------------

local Symbolizer = {}
Symbolizer.__index = Symbolizer

local function hex(n)
   return ("0x%x"):format(n)
end
M.hex = hex

-- opts.core: the ljleak.core module (default: require it; without it frames stay unnamed).
-- opts.tracker: path of the tracker library, the object of the synthetic allocation frame.
function M.new(opts)
   opts = opts or {}
   local core = opts.core
   if core == nil then core = load_core() end
   return setmetatable({
      core = core,
      tracker = opts.tracker,
      symbolizers = {},   -- path -> core symbolizer, or false when it could not be opened
      failed = {},        -- path -> message, for objects that could not be read
      answers = {},       -- path -> offset -> info
      frame_of_info = {}, -- lookup's answer -> its frame
      inlined = {},       -- path -> offset -> frames_at's list
      frame_tables = {},  -- address -> {its frame}; allocation function -> frame
      of_raw = setmetatable({}, {__mode = "k"}),   -- raw frame (raw.parse) -> frame
      tracker_paths = {}, -- path -> is it the tracker's library?
   }, Symbolizer)
end

-- The core symbolizer for PATH, or nil.
function Symbolizer:open(path)
   local s = self.symbolizers[path]
   if s == nil then
      local err
      if self.core then
         s, err = self.core.symbolizer(path)
      else
         err = "ljleak.core is not available"
      end
      if not s then
         self.failed[path] = err
         s = false
      end
      self.symbolizers[path] = s
   end
   return s or nil
end

-- T with T.dir and T.file set from the path FILE (nil: neither). Returns T.
local function set_file(t, file)
   if file then
      t.dir, t.file = file:match("^(.*)/([^/]*)$")
      if not t.file then t.file = file end
   end
   return t
end

-- What is known about OFFSET (a return address's offset) in the object at PATH:
-- {["function"], file, dir, line, symbol_offset}, each possibly nil.
function Symbolizer:lookup(path, offset)
   local per_path = sub(self.answers, path)
   local info = per_path[offset]
   if info then return info end
   info = {}
   local s = self:open(path)
   if s and offset > 0 then
      -- Step back from the return address into the call instruction.
      local fn, file, line, symoff = s:lookup(offset - 1)
      info["function"], info.line, info.symbol_offset = fn, line, symoff
      set_file(info, file)
   end
   per_path[offset] = info
   return info
end

local function is_tracker(self, path)
   if path == self.tracker then return true end
   if path == nil then return false end
   local yes = self.tracker_paths[path]
   if yes == nil then
      yes = path:match("[^/]*$") == "libljleak.so"
      self.tracker_paths[path] = yes
   end
   return yes
end

-- The frame of the return address at OFFSET in the object at PATH (one table per address,
-- shared by every stack that has it).
function Symbolizer:frame(path, offset)
   local info = self:lookup(path, offset)
   local frame = self.frame_of_info[info]
   if not frame then
      frame = M.name_frame({file = info.file, dir = info.dir, line = info.line, object = path,
                            offset = hex(offset)}, info["function"])
      self.frame_of_info[info] = frame
   end
   return frame
end

-- -- Inlined calls ---------------------------------------------------------------------------
-- A call made in inlined code is one return address but several functions: the innermost inlined
-- one, each function that inlined the one before, and the out-of-line function (the one the
-- symbol table names). As Valgrind does, each is a frame: all but the last have `inlined = true`;
-- the first has the address's own line, each other the line where it calls the one before.

-- The frames of the return address at OFFSET in the object at PATH: {Symbolizer:frame(...)} when
-- the call is in no inlined code, else one frame per function as above (the last one named as
-- Symbolizer:frame names it). One list per address, shared by every stack that has it.
function Symbolizer:frames_at(path, offset)
   local per_path = sub(self.inlined, path)
   local list = per_path[offset]
   if list then return list end
   local frame = self:frame(path, offset)
   local s = offset > 0 and self:open(path)
   local chain = s and s.inlines and s:inlines(offset - 1)
   if not chain then
      list = {frame}
   else
      list = {}
      for i, c in ipairs(chain) do
         local last = i == #chain
         local f = i == 1 and {file = frame.file, dir = frame.dir, line = frame.line}
            or set_file({line = c.line}, c.file)
         f.object, f.offset, f.inlined = path, frame.offset, not last or nil
         list[i] = M.name_frame(f, last and (frame.mangled or frame["function"]) or c["function"])
      end
   end
   per_path[offset] = list
   return list
end

-- The C runtime's functions that call main: Valgrind's "below main" (coregrind's
-- VG_(get_fnname_kind)).
local BELOW_MAIN = {__libc_start_main = true, __libc_start_call_main = true, generic_start_main = true}

-- Drop the frames below main from FRAMES (in place), as Valgrind does unless --show-below-main=yes:
-- the stack ends at `main`; without one, at the innermost function below main, which Valgrind calls
-- "(below main)". A stack with neither (a thread's) is kept whole. Returns FRAMES.
function M.end_at_main(frames)
   local last
   for i = #frames, 1, -1 do
      local fn = frames[i]["function"]
      if fn == "main" then
         last = i
         break
      elseif BELOW_MAIN[fn] then
         last = i
      end
   end
   if not last then return frames end
   for i = #frames, last + 1, -1 do frames[i] = nil end
   if frames[last]["function"] ~= "main" then M.name_frame(frames[last], "(below main)") end
   return frames
end

-- The frames of SITE (from raw.parse) in PROC: the allocation function first (as Valgrind shows
-- `malloc`, so `fun:malloc` suppressions match), then one frame per raw frame, down to main.
-- Frames are shared by the stacks that have them.
function Symbolizer:frames(proc, site)
   local alloc = self.frame_tables[site.fn]
   if not alloc then
      alloc = {["function"] = site.fn, object = self.tracker}
      self.frame_tables[site.fn] = alloc
   end
   local frames, raws, of_raw = {alloc}, site.frames, self.of_raw
   local first = 1
   while raws[first] and raws[first].module and is_tracker(self, proc.modules[raws[first].module].path) do
      first = first + 1   -- the tracker's own frames, if the unwinder kept any
   end
   for i = first, #raws do
      local raw = raws[i]
      local list = of_raw[raw]
      if not list then
         if raw.module then
            list = self:frames_at(proc.modules[raw.module].path, raw.offset)
         elseif raw.address then
            list = self.frame_tables[raw.address]
            if not list then
               list = {{address = hex(raw.address)}}
               self.frame_tables[raw.address] = list
            end
         else
            list = {{}}   -- lost in a truncated file
         end
         of_raw[raw] = list
      end
      for k = 1, #list do frames[#frames + 1] = list[k] end
   end
   return M.end_at_main(frames)
end

-- One line of text for FRAME:
--   make_thing (thing.c:12) [/path/libthing.so]
--   make_thing [/path/libthing.so]                 (no line information)
--   /path/libthing.so+0x1167                       (no symbol)
--   [JIT code or unknown] 0x7f1c2e0010a0
function M.frame_text(frame)
   local fn, object = frame["function"], frame.object
   if fn then
      local s = fn
      if frame.file then
         s = s .. (" (%s%s)"):format(frame.file, frame.line and ":" .. frame.line or "")
      end
      if object then s = s .. " [" .. object .. "]" end
      return s
   elseif object then
      return object .. (frame.offset and "+" .. frame.offset or "")
   elseif frame.address then
      return "[JIT code or unknown] " .. frame.address
   end
   return "[unknown]"
end

return M
