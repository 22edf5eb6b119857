-- Reader for the tracker's raw per-process report (doc/raw-format.md, version 1).
-- parse(text, name) -> proc | nil, "NAME:LINE: message"; read(path) does the same for a file.
--
-- proc = {
--   name = "…/proc.4242.raw", version = 1, pid = 4242, ppid = 4241, exe = "/usr/bin/luajit",
--   lua_state = "open"|"closed"|"none"|nil,
--   modules = { [index] = {index = 0, bias = 0x55d0c0a00000, path = "/usr/bin/luajit"} },
--   sites = { [id] = {id = 7, fn = "malloc", frames = { {module = 1, offset = 0x8a2f1}, {address = 0x7f1c...} }} },
--   leaks = { {kind = "definite", site = 7, blocks = 3, bytes = 300}, ... },   -- file order
--   stats = { allocs = 1234, ... },
--   truncated = true when the file has no `end` line (the process died while writing it),
-- }
-- A frame with `module` is an offset (from that module's load bias) of a return address; a frame
-- with `address` is an absolute address in no loaded object ('?' in the file: JIT code or unknown).
local util = require "ljleak.util"
local M = {}

M.VERSION = 1

M.KINDS = {"definite", "indirect", "possible", "reachable"}
local is_kind = {}
for _, k in ipairs(M.KINDS) do is_kind[k] = true end
M.is_kind = is_kind

M.ALLOC_FUNCTIONS = {"malloc", "calloc", "realloc", "reallocarray", "memalign", "posix_memalign",
                     "aligned_alloc", "valloc", "pvalloc"}

-- A decimal or 0x-hexadecimal unsigned number, or nil.
local function number(s)
   if s and (s:match("^%d+$") or s:match("^0[xX]%x+$")) then
      return tonumber(s)
   end
end

-- "word rest of line": the first field and everything after one space.
local function split_first(line)
   return line:match("^(%S+) ?(.*)$")
end

-- Each handler gets (proc, rest_of_line, state) and returns nothing or an error message.
local handlers = {}

function handlers.pid(proc, rest)
   proc.pid = number(rest)
   if not proc.pid then return "bad pid '" .. rest .. "'" end
end

function handlers.ppid(proc, rest)
   proc.ppid = number(rest)
   if not proc.ppid then return "bad ppid '" .. rest .. "'" end
end

function handlers.exe(proc, rest)
   proc.exe = rest
end

-- lua_vm unavailable REASON: the tracker could not read this LuaJIT's state (no Lua frames), or
-- could not walk its heap (scanned whole).
function handlers.lua_vm(proc, rest)
   local reason = rest:match("^unavailable (.+)$")
   if not reason then return "bad lua_vm line (want: lua_vm unavailable REASON)" end
   proc.lua_vm = reason
end

-- unstopped TID [unsafe]: a thread that could not be stopped for the check (it blocks signals).
function handlers.unstopped(proc, rest)
   local tid, flag = rest:match("^(%d+) ?(%a*)$")
   if not tid or (flag ~= "" and flag ~= "unsafe") then return "bad unstopped line (want: unstopped TID [unsafe])" end
   proc.unstopped = proc.unstopped or {}
   proc.unstopped[#proc.unstopped + 1] = number(tid)
   if flag == "unsafe" then proc.unsafe = true end
end

function handlers.lua_state(proc, rest)
   if rest ~= "open" and rest ~= "closed" and rest ~= "none" then
      return "bad lua_state '" .. rest .. "' (open, closed or none)"
   end
   proc.lua_state = rest
end

function handlers.module(proc, rest)
   local index, bias, path = rest:match("^(%S+) (%S+) (.*)$")
   index, bias = number(index), number(bias)
   if not index or not bias then
      return "bad module line (want: module INDEX BIAS PATH)"
   end
   if proc.modules[index] then
      return "module " .. index .. " defined twice"
   end
   proc.modules[index] = {index = index, bias = bias, path = path}
end

function handlers.site(proc, rest, state)
   local fields = {}
   for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
   local id, fn, n = number(fields[1]), fields[2], number(fields[3])
   if not id or not fn or not n then
      return "bad site line (want: site ID FUNCTION NFRAMES FRAME...)"
   end
   local attrs = {}  -- key=value fields after the frames (lua=ID, ctx=ID)
   while #fields > 3 + n and fields[#fields]:match("^%a+=") do
      local k, v = table.remove(fields):match("^(%a+)=(.*)$")
      attrs[k] = number(v)
      if not attrs[k] then return ("site %d: bad %s=%s"):format(id, k, v) end
   end
   if #fields ~= 3 + n then
      return ("site %d: %d frames announced, %d given"):format(id, n, #fields - 3)
   end
   if proc.sites[id] then
      return "site " .. id .. " defined twice"
   end
   local frames = {}
   for i = 1, n do
      local m, off = fields[3 + i]:match("^([^:]+):(.+)$")
      local offset = number(off)
      if not offset then
         return ("site %d: bad frame '%s' (want MODULE:OFFSET or ?:ADDRESS)"):format(id, fields[3 + i])
      end
      if m == "?" then
         frames[i] = {address = offset}
      else
         local index = number(m)
         if not index then
            return ("site %d: bad module index in frame '%s'"):format(id, fields[3 + i])
         end
         frames[i] = {module = index, offset = offset}
         state.module_refs[#state.module_refs + 1] = {index = index, line = state.lineno, site = id}
      end
   end
   proc.sites[id] = {id = id, fn = fn, frames = frames, lua = attrs.lua, ctx = attrs.ctx,
                     dropped = attrs.dropped == 1 or nil}
end

local function unescape(s)
   return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- lua ID LINE FLAGS NAME SOURCE: one Lua frame of an interned Lua stack, innermost first.
function handlers.lua(proc, rest)
   local id, line, flags, name, source = rest:match("^(%d+) (%-?%d+) (%d+) (%S+) (.*)$")
   if not id then
      return "bad lua line (want: lua ID LINE FLAGS NAME SOURCE)"
   end
   id, line = number(id), tonumber(line)
   local frames = proc.lua[id] or {}
   proc.lua[id] = frames
   frames[#frames + 1] = {
      source = source, line = line >= 0 and line or nil,
      ["function"] = name ~= "?" and unescape(name) or nil,
      approximate = number(flags) % 2 == 1 or nil,
   }
end

-- ctx ID EPOCH TAG NOTE: the tag (test name...), snapshot epoch and note ("finalizer detached
-- at...") that sites with ctx=ID carry; TAG and NOTE are escaped, "-" when absent.
function handlers.ctx(proc, rest)
   local id, epoch, tag, note = rest:match("^(%d+) (%d+) (%S+) (%S+)$")
   if not id then
      return "bad ctx line (want: ctx ID EPOCH TAG NOTE)"
   end
   proc.ctx[number(id)] = {epoch = number(epoch), tag = tag ~= "-" and unescape(tag) or nil,
                           note = note ~= "-" and unescape(note) or nil}
end

function handlers.leak(proc, rest, state)
   local kind, site, blocks, bytes = rest:match("^(%S+) (%S+) (%S+) (%S+)$")
   if not kind then
      return "bad leak line (want: leak KIND SITE BLOCKS BYTES)"
   end
   if not is_kind[kind] then
      return "unknown leak kind '" .. kind .. "'"
   end
   site, blocks, bytes = number(site), number(blocks), number(bytes)
   if not site or not blocks or not bytes then
      return "bad number in leak line"
   end
   proc.leaks[#proc.leaks + 1] = {kind = kind, site = site, blocks = blocks, bytes = bytes}
   state.leak_lines[#proc.leaks] = state.lineno
end

function handlers.stats(proc, rest)
   for item in rest:gmatch("%S+") do
      local k, v = item:match("^([%w_]+)=(.*)$")
      if not k or not number(v) then
         return "bad stats item '" .. item .. "' (want NAME=NUMBER)"
      end
      proc.stats[k] = number(v)
   end
end

handlers["ljleak-raw"] = function(proc, rest)
   local version = number(rest)
   if not version then
      return "bad header (want: ljleak-raw VERSION)"
   end
   if version ~= M.VERSION then
      return ("unsupported raw format version %d (this ljleak reads %d)"):format(version, M.VERSION)
   end
   proc.version = version
end

-- Parse TEXT (the file's content); NAME is used in messages.
function M.parse(text, name)
   name = name or "raw"
   local proc = {name = name, modules = {}, sites = {}, leaks = {}, stats = {}, lua = {}, ctx = {},
                 truncated = true}
   local state = {module_refs = {}, leak_lines = {}}
   local lines = {}
   for line in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
   -- A last line without its newline was cut off while being written (unless it is `end`).
   local cut = text:match("[^\n]+$")
   if cut == "end" then lines[#lines + 1], cut = cut, nil end
   local function fail(lineno, msg)
      return nil, ("%s:%d: %s"):format(name, lineno, msg)
   end
   if #lines == 0 then
      return fail(1, cut and "truncated header" or "empty file")
   end
   for lineno, line in ipairs(lines) do
      state.lineno = lineno
      if line == "end" then
         proc.truncated = false
         break
      end
      if lineno == 1 and not line:match("^ljleak%-raw ") then
         return fail(1, "not an ljleak raw report (first line must be 'ljleak-raw 1')")
      end
      if line ~= "" then
         local word, rest = split_first(line)
         local handler = handlers[word]
         if handler then
            local err = handler(proc, rest, state)
            if err then return fail(lineno, err) end
         end
      end
   end
   -- References to undefined modules or sites: an error in a complete file; in a truncated one,
   -- whatever was cut off is dropped (frames become unknown, leaks of lost sites are left out).
   for _, ref in ipairs(state.module_refs) do
      if not proc.modules[ref.index] then
         if not proc.truncated then
            return fail(ref.line, ("site %d: frame in module %d, which is not defined"):format(ref.site, ref.index))
         end
         for _, frame in ipairs(proc.sites[ref.site].frames) do
            if frame.module == ref.index then frame.module, frame.offset = nil, nil end
         end
      end
   end
   local kept = {}
   for i, leak in ipairs(proc.leaks) do
      if proc.sites[leak.site] then
         kept[#kept + 1] = leak
      elseif not proc.truncated then
         return fail(state.leak_lines[i], ("leak of site %d, which is not defined"):format(leak.site))
      end
   end
   proc.leaks = kept
   if not proc.pid then
      if not proc.truncated then return fail(#lines, "no pid line") end
      proc.pid = M.pid_of_name(name)
   end
   return proc
end

-- Read and parse the file at PATH.
M.read = util.reader(M.parse)

-- The pid in a raw file's name (proc.<pid>.raw), or nil.
function M.pid_of_name(filename)
   return tonumber(filename:match("proc%.(%d+)%.raw$"))
end

return M
