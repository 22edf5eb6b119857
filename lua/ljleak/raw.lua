-- Reader of the tracker's raw report (doc/raw-format.md, version 1): a process's file at exit,
-- and the reports made in the program for mid-run checks and snapshots. It produces the one proc
-- shape that the report model reads (ljleak.vgxml gives the same for Valgrind's processes):
-- parse(text, name) -> proc | nil, "NAME:LINE: message"; read(path) does the same for a file.
--
-- proc = {
--   name = "…/proc.4242.raw", version = 1, pid = 4242, ppid = 4241, exe = "/usr/bin/luajit",
--   command = {"luajit", "app.lua"} | nil,  -- the process's command line, as it had it at the end
--   lua_state = "open"|"closed"|"none"|nil, lua_vm = "why Lua frames are unavailable" | nil,
--   unstopped = {tid, ...} | nil,          -- threads that could not be stopped for the check
--   modules = { [index] = {index = 0, bias = 0x55d0c0a00000, path = "/usr/bin/luajit"} },
--   sites = { [id] = {id = 7, fn = "malloc", frames = { {module = 1, offset = 0x8a2f1}, {address = 0x7f1c...} },
--                     lua = ID | nil, ctx = ID | nil, dropped = true | nil} },
--   leaks = { {kind = "definite", site = 7, blocks = 3, bytes = 300}, ... },   -- file order; an indirect
--             one may have owner = SITE: the site of the definite blocks that hold its blocks
--   lua = { [id] = { {source = "app.lua", line = 12, ["function"] = "f", approximate = true|nil}, ... } },
--   ctx = { [id] = {epoch = 2, tag = "a test's name" | nil, note = "ffi.gc finalizer detached at ..." | nil} },
--   stats = { live_blocks = 1234, live_bytes = 5000, allocs = 2000, allocated = 90000, ... },
--   truncated = true when the file has no `end` line (the process died while writing it),
--   -- Valgrind's processes (ljleak.vgxml) also have: symbolized = true (their sites' frames are
--   -- named already: {function, file, line, object...}), errors, suppcounts, command, protocol,
--   -- finished, fatal_signal.
-- }
-- A frame with `module` is an offset (from that module's load bias) of a return address; a frame
-- with `address` is an absolute address in no loaded object ('?' in the file: JIT code or unknown).
local const = require "ljleak.const"
local util = require "ljleak.util"
local M = {}

M.VERSION = 1

-- Leak kinds; "live" only in a snapshot's report (blocks not classified).
local is_kind = {live = true}
for _, k in ipairs(const.KINDS) do is_kind[k] = true end

local byte = string.byte

-- A decimal or 0x-hexadecimal unsigned number, or nil.
local function number(s)
   if s and (s:find("^%d+$") or s:find("^0[xX]%x+$")) then
      return tonumber(s)
   end
end

-- "word rest of line": the first field and everything after one space.
local function split_first(line)
   local e = line:find("%s")
   if not e then return line, "" end
   if e == 1 then return nil end
   return line:sub(1, e - 1), line:sub(byte(line, e) == 32 and e + 1 or e)
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

local function unescape(s)
   return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- cmd ARG...: the command line, each argument escaped ("-" for an empty one).
function handlers.cmd(proc, rest)
   local command = {}
   for arg in rest:gmatch("[^ ]+") do command[#command + 1] = arg ~= "-" and unescape(arg) or "" end
   proc.command = command
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

-- The frame in TOKEN (MODULE:OFFSET or ?:ADDRESS) of site ID, one table per distinct token.
local function frame_of_token(token, state, id)
   local frame = state.frame_of[token]
   if frame then return frame end
   local m, off = token:match("^([^:]+):(.+)$")
   local offset = number(off)
   if not offset then
      return nil, ("site %d: bad frame '%s' (want MODULE:OFFSET or ?:ADDRESS)"):format(id, token)
   end
   if m == "?" then
      frame = {address = offset}
   else
      local index = number(m)
      if not index then
         return nil, ("site %d: bad module index in frame '%s'"):format(id, token)
      end
      frame = {module = index, offset = offset}
      state.module_refs[#state.module_refs + 1] = {index = index, line = state.lineno, site = id, frame = frame}
   end
   state.frame_of[token] = frame
   return frame
end

-- The hexadecimal number after "0x" in bytes I..J of S, or nil.
local function hex_at(s, i, j)
   if j < i + 2 or byte(s, i) ~= 48 or byte(s, i + 1) ~= 120 then return nil end
   local n = 0
   for k = i + 2, j do
      local c = byte(s, k)
      if c >= 48 and c <= 57 then n = n * 16 + c - 48
      elseif c >= 97 and c <= 102 then n = n * 16 + c - 87
      else return nil end
   end
   return n
end

-- The frame in bytes I..J of LINE, read without making a string when it is written as the
-- tracker writes it (N:0xHEX or ?:0xHEX): a deep report has millions. Nil, message if bad.
local function frame_at(line, i, j, state, id)
   local c, k, index = byte(line, i), i, 0
   if c == 63 and byte(line, i + 1) == 58 then   -- ?:ADDRESS
      local address = hex_at(line, i + 2, j)
      if address and address < 2^52 then
         local frame = state.address_frame[address]
         if not frame then
            frame = {address = address}
            state.address_frame[address] = frame
         end
         return frame
      end
   else
      while c and c >= 48 and c <= 57 and k < j do
         index = index * 10 + c - 48
         k = k + 1
         c = byte(line, k)
      end
      local offset = c == 58 and k > i and index < 4096 and hex_at(line, k + 1, j)
      if offset and offset < 2^40 then
         local key = index * 2^40 + offset
         local frame = state.module_frame[key]
         if not frame then
            frame = {module = index, offset = offset}
            state.module_frame[key] = frame
            state.module_refs[#state.module_refs + 1] = {index = index, line = state.lineno, site = id, frame = frame}
         end
         return frame
      end
   end
   return frame_of_token(line:sub(i, j), state, id)
end

-- Blank characters between fields (as %s).
local blank = {[32] = true, [9] = true, [10] = true, [11] = true, [12] = true, [13] = true}

-- site ID FUNCTION NFRAMES FRAME... [lua=ID] [ctx=ID]
function handlers.site(proc, rest, state)
   local id, fn, n, pos = rest:match("^%s*(%S+)%s+(%S+)%s+(%S+)()")
   id, n = number(id), number(n)
   if not id or not fn or not n then
      return "bad site line (want: site ID FUNCTION NFRAMES FRAME...)"
   end
   if proc.sites[id] then
      return "site " .. id .. " defined twice"
   end
   -- One table per distinct frame, shared by the sites that have it (deep stacks repeat them).
   local frames, given, attrs, others = {}, 0, {}, 0
   local len = #rest
   while pos <= len do
      if blank[byte(rest, pos)] then
         pos = pos + 1
      else
         local j = pos
         while j < len and not blank[byte(rest, j + 1)] do j = j + 1 end
         local frame, err
         if given < n and others == 0 and next(attrs) == nil then
            frame, err = frame_at(rest, pos, j, state, id)
            if not frame and not rest:sub(pos, j):find("^%a+=") then return err end
         end
         if frame then
            given = given + 1
            frames[given] = frame
         else   -- key=value fields after the frames (lua=ID, ctx=ID)
            local k, v = rest:sub(pos, j):match("^(%a+)=(.*)$")
            if not k then
               others = others + 1
            elseif others == 0 then
               attrs[k] = number(v)
               if not attrs[k] then return ("site %d: bad %s=%s"):format(id, k, v) end
            end
         end
         pos = j + 1
      end
   end
   if given + others ~= n then
      return ("site %d: %d frames announced, %d given"):format(id, n, given + others)
   end
   proc.sites[id] = {id = id, fn = fn, frames = frames, lua = attrs.lua, ctx = attrs.ctx,
                     dropped = attrs.dropped == 1 or nil}
end

-- lua ID LINE FLAGS NAME SOURCE: one Lua frame of an interned Lua stack, innermost first.
-- The Lua frame of the fields of a lua line (LINE FLAGS NAME SOURCE, as text), as the proc shape
-- has it. Also the Valgrind engine's (vglua files, ljleak.vgxml), whose lines name an address.
function M.lua_frame(line, flags, name, source)
   line = tonumber(line)
   return {
      source = source, line = line >= 0 and line or nil,
      ["function"] = name ~= "?" and unescape(name) or nil,
      approximate = number(flags) % 2 == 1 or nil,
   }
end

function handlers.lua(proc, rest)
   local id, line, flags, name, source = rest:match("^(%d+) (%-?%d+) (%d+) (%S+) (.*)$")
   if not id then
      return "bad lua line (want: lua ID LINE FLAGS NAME SOURCE)"
   end
   id = number(id)
   local frames = proc.lua[id] or {}
   proc.lua[id] = frames
   frames[#frames + 1] = M.lua_frame(line, flags, name, source)
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

-- leak KIND SITE BLOCKS BYTES [owner=SITE]
function handlers.leak(proc, rest, state)
   local kind, site, blocks, bytes, more = rest:match("^(%S+) (%S+) (%S+) (%S+)(.*)$")
   if not kind then
      return "bad leak line (want: leak KIND SITE BLOCKS BYTES [owner=SITE])"
   end
   if not is_kind[kind] then
      return "unknown leak kind '" .. kind .. "'"
   end
   site, blocks, bytes = number(site), number(blocks), number(bytes)
   local owner = more:match("^ owner=(%S+)$")
   if not site or not blocks or not bytes or (more ~= "" and not number(owner)) then
      return "bad number in leak line"
   end
   proc.leaks[#proc.leaks + 1] = {kind = kind, site = site, blocks = blocks, bytes = bytes, owner = number(owner)}
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
   local state = {module_refs = {}, leak_lines = {}, frame_of = {}, module_frame = {}, address_frame = {}}
   local lines, pos = {}, 1
   while true do
      local nl = text:find("\n", pos, true)
      if not nl then break end
      lines[#lines + 1] = text:sub(pos, nl - 1)
      pos = nl + 1
   end
   -- A last line without its newline was cut off while being written (unless it is `end`).
   local last = #text   -- (text:match("[^\n]+$") would try every position of the last lines)
   while last > 0 and text:byte(last) ~= 10 do last = last - 1 end
   local cut = last < #text and text:sub(last + 1) or nil
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
         ref.frame.module, ref.frame.offset = nil, nil   -- in every site that has it
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
