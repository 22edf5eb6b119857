-- Turns the raw report's sites (module index + offset) into frames with function, file and line.
-- One libdw symbolizer (ljleak.core) per object path, and one answer per (path, offset), are cached;
-- with opts.cache, the answers are also kept on disk from one run to the next (per build ID).
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
-- opts.cache: a directory where answers are kept from one run to the next (M.cache_dir()); save
-- them there with :save().
function M.new(opts)
   opts = opts or {}
   local core = opts.core
   if core == nil then core = load_core() end
   return setmetatable({
      core = core,
      tracker = opts.tracker,
      cache_dir = opts.cache,
      disk = {},          -- path -> its cache file (see "The disk cache"), or false
      symbolizers = {},   -- path -> core symbolizer, or false when it could not be opened
      failed = {},        -- path -> message, for objects that could not be read
      answers = {},       -- path -> offset -> info
      names = {},         -- path -> offset -> function name from the symbol table, or false
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

-- Free libdw's state of every object opened now, not when the collector gets to it (a later
-- lookup opens the object again).
function Symbolizer:close()
   for path, s in pairs(self.symbolizers) do
      if s then
         s:close()
         self.symbolizers[path] = nil
      end
   end
end

-- Answers of the disk cache (below): a cache file holds every answer any run asked for, and a run
-- asks for few of them. Its JSON answers are kept as text when read, and decoded the first time
-- one is asked for (T[OFFSET] then holds the value, or nothing when the text was not what WANT
-- accepts). Written back as they were read.
local function is_info(v) return type(v) == "table" end
local function is_chain(v) return v == false or type(v) == "table" end

local function disk_answer(t, offset, want)
   local v = t[offset]
   if type(v) ~= "string" then return v end
   local ok, x = pcall(require("cjson").decode, v)
   if not (ok and want(x)) then x = nil end
   t[offset] = x
   return x
end

local function as_json(v, encode)
   return type(v) == "string" and v or encode(v)
end

-- What is known about OFFSET (a return address's offset) in the object at PATH:
-- {["function"], file, dir, line, symbol_offset}, each possibly nil.
function Symbolizer:lookup(path, offset)
   local per_path = sub(self.answers, path)
   local info = per_path[offset]
   if info then return info end
   local disk = self:disk_file(path)
   info = disk and disk_answer(disk.info, offset, is_info)
   if info then
      per_path[offset] = info
      return info
   end
   info = {}
   local s = self:open(path)
   if s and offset > 0 then
      -- Step back from the return address into the call instruction.
      local fn, file, line, symoff = s:lookup(offset - 1)
      info["function"], info.line, info.symbol_offset = fn, line, symoff
      set_file(info, file)
   end
   per_path[offset] = info
   if disk and s then disk.new_info[offset] = info end
   return info
end

-- The name of the function at OFFSET in the object at PATH as lookup gives it, or nil: from the
-- symbol table only (libdw reads an object's DWARF whole on its first line lookup: libc's, with
-- its separate debug information, takes 60 ms).
function Symbolizer:function_name(path, offset)
   local info = self.answers[path] and self.answers[path][offset]
   if info then return info["function"] end
   local per_path = sub(self.names, path)
   local name = per_path[offset]
   if name == nil then
      local disk = self:disk_file(path)
      info = disk and disk_answer(disk.info, offset, is_info)
      if info then
         name = info["function"] or false
      else
         if disk then name = disk.names[offset] end
         if name == nil then
            local s = self:open(path)
            name = s and offset > 0 and s:name(offset - 1) or false
            if disk and s then disk.new_names[offset] = name end
         end
      end
      per_path[offset] = name
   end
   return name or nil
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

-- The inlined calls at OFFSET (a return address's offset) in the object at PATH, as the core
-- symbolizer's inlines gives them ({function, file, line}..., innermost first), or nil when the
-- call is in no inlined code; from the disk cache when it has them.
function Symbolizer:inline_chain(path, offset)
   local disk = self:disk_file(path)
   local chain
   if disk then chain = disk_answer(disk.inlines, offset, is_chain) end
   if chain == nil then
      local s = offset > 0 and self:open(path)
      chain = s and s.inlines and s:inlines(offset - 1) or false
      if disk and s then disk.new_inlines[offset] = chain end
   end
   return chain or nil
end

-- The frames of the return address at OFFSET in the object at PATH: {Symbolizer:frame(...)} when
-- the call is in no inlined code, else one frame per function as above (the last one named as
-- Symbolizer:frame names it). One list per address, shared by every stack that has it.
function Symbolizer:frames_at(path, offset)
   local per_path = sub(self.inlined, path)
   local list = per_path[offset]
   if list then return list end
   local frame = self:frame(path, offset)
   local chain = self:inline_chain(path, offset)
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
-- ("(below main)": such a frame, named so by an earlier stack that shares it.)
local BELOW_MAIN = {__libc_start_main = true, __libc_start_call_main = true, generic_start_main = true,
                    ["(below main)"] = true}

-- Where a stack of N frames ends, by Valgrind's rule, when NAME(i) is the function of frame i:
-- at `main` (the outermost), else at the innermost function below main (true: it is that one), else
-- at N.
local function main_cut(n, name)
   local last
   for i = n, 1, -1 do
      local fn = name(i)
      if fn == "main" then
         return i, false
      elseif BELOW_MAIN[fn] then
         last = i
      end
   end
   if last then return last, true end
   return n, false
end

-- Drop the frames below main from FRAMES (in place), as Valgrind does unless --show-below-main=yes:
-- the stack ends at `main`; without one, at the innermost function below main, which Valgrind calls
-- "(below main)". A stack with neither (a thread's) is kept whole. Returns FRAMES.
function M.end_at_main(frames)
   local last, below = main_cut(#frames, function(i) return frames[i]["function"] end)
   for i = #frames, last + 1, -1 do frames[i] = nil end
   if below then M.name_frame(frames[last], "(below main)") end
   return frames
end

-- The frames of SITE (from raw.parse) in PROC: the allocation function first (as Valgrind shows
-- `malloc`, so `fun:malloc` suppressions match), then one frame per raw frame, down to main.
-- Frames are shared by the stacks that have them. Where the stack ends is found from the symbol
-- tables' names: the frames below main are never looked up in DWARF.
function Symbolizer:frames(proc, site)
   local alloc = self.frame_tables[site.fn]
   if not alloc then
      alloc = {["function"] = site.fn, object = self.tracker}
      self.frame_tables[site.fn] = alloc
   end
   local raws, of_raw, modules = site.frames, self.of_raw, proc.modules
   local first = 1
   while raws[first] and raws[first].module and is_tracker(self, modules[raws[first].module].path) do
      first = first + 1   -- the tracker's own frames, if the unwinder kept any
   end
   local n = #raws - first + 2   -- alloc, then raws[first..]
   local last, below = main_cut(n, function(i)
      if i == 1 then return site.fn end
      local raw = raws[first + i - 2]
      local list = of_raw[raw]   -- its frames, named already: the out-of-line function is the last
      if list then return list[#list]["function"] end
      if not raw.module then return nil end
      local name = self:function_name(modules[raw.module].path, raw.offset)
      return name and (M.demangle(name) or name)
   end)
   local frames = {alloc}
   for i = first, first + last - 2 do
      local raw = raws[i]
      local list = of_raw[raw]
      if not list then
         if raw.module then
            list = self:frames_at(modules[raw.module].path, raw.offset)
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
   if below then M.name_frame(frames[#frames], "(below main)") end   -- (raw LAST's out-of-line frame)
   return frames
end

-- -- The disk cache --------------------------------------------------------------------------
-- Reading an object's DWARF costs more than the rest of a small run (libc's separate debug info:
-- 60 ms and 16 MB), and suites run ljleak once per spec file. So the answers for an object are
-- kept in CACHE_DIR/BUILD_ID, valid while the object's cache key (ljleak.core: its build ID and the
-- state of the places its debug information may come from) is the same; an object without a build
-- ID is not cached. A file: "ljleak-symcache VERSION KEY", then one answer a line:
--   i OFFSET JSON      what lookup gives (JSON of its info table)
--   n OFFSET NAME      what function_name gives, "" for none
--   l OFFSET JSON      what inline_chain gives (JSON of its list; false: no inlined code)
-- (OFFSET in hexadecimal). Files are replaced whole (a temporary file renamed): runs at the same
-- time may each lose the other's new answers, never corrupt them. A line that cannot be read is
-- skipped. Bump VERSION whenever what lookup gives changes (2: the inlined calls).
-- The folder is kept under M.CACHE_MAX_BYTES (see M.prune): a run that reads a file touches it,
-- so the files that go first are those no run has used for longest (objects rebuilt since, with
-- another build ID).

local CACHE_VERSION = 2
M.CACHE_MAX_BYTES = 64 * 1024 * 1024
local TMP_MAX_AGE = 3600   -- seconds: a temporary file this old was left by a run that died

-- When the cache files in DIR (names of hexadecimal digits) hold more than MAX bytes
-- (M.CACHE_MAX_BYTES), remove those modified longest ago until they hold at most 3/4 of it; and
-- remove temporary files older than an hour. NOW: the time (os.time()). Failures are silent.
-- Returns the names removed.
function M.prune(dir, max, now)
   local lfs = require "lfs"
   max, now = max or M.CACHE_MAX_BYTES, now or os.time()
   local ok, iter, dir_obj = pcall(lfs.dir, dir)
   if not ok then return {} end
   local files, total, removed = {}, 0, {}
   for name in iter, dir_obj do
      local path = dir .. "/" .. name
      local is_cache, is_tmp = name:match("^%x+$"), name:match("^%x+%.%d+%.tmp$")
      local attr = (is_cache or is_tmp) and lfs.attributes(path)
      if attr and attr.mode == "file" then
         if is_cache then
            files[#files + 1] = {name = name, size = attr.size, mtime = attr.modification}
            total = total + attr.size
         elseif now - attr.modification > TMP_MAX_AGE and os.remove(path) then
            removed[#removed + 1] = name
         end
      end
   end
   if total <= max then return removed end
   table.sort(files, function(a, b)
      if a.mtime ~= b.mtime then return a.mtime < b.mtime end
      return a.name < b.name
   end)
   for _, f in ipairs(files) do
      if total <= max * 3 / 4 then break end
      if os.remove(dir .. "/" .. f.name) then
         total = total - f.size
         removed[#removed + 1] = f.name
      end
   end
   return removed
end

-- The directory for the disk cache: $LJLEAK_CACHE ("0" or empty: no cache), else
-- $XDG_CACHE_HOME/ljleak, else ~/.cache/ljleak; nil for none.
function M.cache_dir(getenv)
   getenv = getenv or os.getenv
   local dir = getenv(require("ljleak.const").ENV.CACHE)
   if dir then return dir ~= "" and dir ~= "0" and dir or nil end
   local xdg, home = getenv("XDG_CACHE_HOME"), getenv("HOME")
   if xdg and xdg:sub(1, 1) == "/" then return xdg .. "/ljleak" end
   return home and home ~= "" and home .. "/.cache/ljleak" or nil
end

-- The answers on disk for the object at PATH: {key, file, info = {offset -> info},
-- names = {offset -> name or false}, inlines = {offset -> chain or false}, new_info, new_names,
-- new_inlines}, or false (no cache for it).
function Symbolizer:disk_file(path)
   local disk = self.disk[path]
   if disk ~= nil then return disk end
   disk = false
   local key = self.cache_dir and self.core and self.core.cache_key and self.core.cache_key(path)
   if key and not key:find("\n", 1, true) then
      disk = {key = key, file = ("%s/%s"):format(self.cache_dir, key:match("^%x+")), info = {}, names = {},
              inlines = {}, new_info = {}, new_names = {}, new_inlines = {}}
      local f = io.open(disk.file, "rb")
      if f and f:read("*l") == ("ljleak-symcache %d %s"):format(CACHE_VERSION, key) then
         for line in f:lines() do   -- (JSON kept as text until asked for: disk_answer)
            local what, off, rest = line:match("^([inl]) (%x+) (.*)$")
            off = off and tonumber(off, 16)
            if what == "i" then
               disk.info[off] = rest
            elseif what == "n" then
               disk.names[off] = rest ~= "" and rest or false
            elseif what == "l" then
               disk.inlines[off] = rest
            end
         end
         require("lfs").touch(disk.file)   -- used now: the last to go when the cache is pruned
      end
      if f then f:close() end
   end
   self.disk[path] = disk
   return disk
end

-- Write the new answers of this run to the disk cache (with those it had), then prune it when
-- anything was written. Failures are silent: the cache only saves time.
function Symbolizer:save()
   local wrote = false
   for _, disk in pairs(self.disk) do
      if disk and (next(disk.new_info) or next(disk.new_names) or next(disk.new_inlines)) then
         local encode, lines = require("cjson").encode, {("ljleak-symcache %d %s"):format(CACHE_VERSION, disk.key)}
         for off, info in pairs(disk.info) do
            if not disk.new_info[off] then lines[#lines + 1] = ("i %x %s"):format(off, as_json(info, encode)) end
         end
         for off, info in pairs(disk.new_info) do lines[#lines + 1] = ("i %x %s"):format(off, encode(info)) end
         for off, name in pairs(disk.names) do
            if disk.new_names[off] == nil and not disk.info[off] and not disk.new_info[off] then
               lines[#lines + 1] = ("n %x %s"):format(off, name or "")
            end
         end
         for off, name in pairs(disk.new_names) do
            if not (name or ""):find("\n", 1, true) and not disk.info[off] and not disk.new_info[off] then
               lines[#lines + 1] = ("n %x %s"):format(off, name or "")
            end
         end
         for off, chain in pairs(disk.inlines) do
            if disk.new_inlines[off] == nil then lines[#lines + 1] = ("l %x %s"):format(off, as_json(chain, encode)) end
         end
         for off, chain in pairs(disk.new_inlines) do lines[#lines + 1] = ("l %x %s"):format(off, encode(chain)) end
         lines[#lines + 1] = ""
         local lfs = require "lfs"
         lfs.mkdir((self.cache_dir:gsub("/[^/]*$", "")))   -- ~/.cache, when it is not there yet
         lfs.mkdir(self.cache_dir)
         local tmp = ("%s.%d.tmp"):format(disk.file, require("posix.unistd").getpid())
         local f = io.open(tmp, "wb")
         if f then
            local ok = f:write(table.concat(lines, "\n"))
            ok = f:close() and ok
            if not (ok and os.rename(tmp, disk.file)) then os.remove(tmp) end
         end
         disk.new_info, disk.new_names, disk.new_inlines = {}, {}, {}
         wrote = true
      end
   end
   if wrote then M.prune(self.cache_dir) end
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
