-- Reader of Valgrind's XML output (protocol 4, and 5 with --track-fds), one file per process,
-- into processes of the one proc shape that ljleak.raw documents, with frames already named
-- (proc.symbolized) and memcheck's other errors (invalid reads and writes, bad frees...).
-- parse_file(text, name) -> procs, problems; collect(run_dir) -> procs, problems.
local lfs = require "lfs"
local lxp = require "lxp"

local raw = require "ljleak.raw"
local symbolize = require "ljleak.symbolize"
local util = require "ljleak.util"

local M = {}

local LEAK_KINDS = {
   Leak_DefinitelyLost = "definite", Leak_IndirectlyLost = "indirect",
   Leak_PossiblyLost = "possible", Leak_StillReachable = "reachable",
}


-- Parse TEXT into a tree of {name, kids = {...}, text = "...", closed = true|nil}. A document cut
-- short (the process was killed) gives the elements read so far; those not closed have no
-- `closed`. Returns the root (nil if none), and, if the text is not one whole document, the XML
-- parser's message, the byte where it stopped, and whether that is only the end of the text.
local function parse_tree(text)
   local top = {name = "#document", kids = {}, parts = {}}
   local stack = {top}
   local parser = lxp.new({
      StartElement = function(_, name)
         local node = {name = name, kids = {}, parts = {}}
         local parent = stack[#stack]
         parent.kids[#parent.kids + 1] = node
         stack[#stack + 1] = node
      end,
      EndElement = function()
         local node = table.remove(stack)
         node.text = table.concat(node.parts)
         node.parts = nil
         node.closed = true
      end,
      CharacterData = function(_, s)
         local parts = stack[#stack].parts
         if parts then parts[#parts + 1] = s end
      end,
   })
   local ok, err, _, _, pos = parser:parse(text)
   local at_end = false
   if ok then
      ok, err = parser:parse()
      at_end = true
   end
   pcall(parser.close, parser)   -- it raises when the parser stopped on an error
   for _, node in ipairs(stack) do
      if node.parts then
         node.text = table.concat(node.parts)
         node.parts = nil
      end
   end
   if ok then return top.kids[1] end
   return top.kids[1], err, at_end and #text + 1 or pos or #text + 1, at_end
end

local function child(node, name)
   for _, k in ipairs(node.kids) do
      if k.name == name then return k end
   end
end

local function child_text(node, name)
   local c = child(node, name)
   return c and c.text
end

local function hex(s)
   if not s then return nil end
   local n = tonumber(s)
   return n and ("0x%x"):format(n) or s
end

-- -- Lua frames -------------------------------------------------------------------------------
-- libljleak_vg.so sends an allocation made while Lua code calls C through a trampoline of its Lua
-- stack (32-byte aligned): Valgrind's stack then holds its address, and at exit the process writes
-- vglua.PID.ID beside its XML: "lua 0xADDR LINE FLAGS NAME SOURCE" lines, innermost first.

-- The trampolines of one process: address -> Lua frames ({source, line, function}), or nil.
function M.read_lua_frames(path)
   local text = util.read_file(path)
   if not text or not text:match("^ljleak%-vglua 1\n") then return nil end
   local map = {}
   for addr, line, flags, name, source in text:gmatch("lua 0x(%x+) (%-?%d+) (%d+) (%S+) ([^\n]*)\n") do
      local a = tonumber(addr, 16)
      map[a] = map[a] or {}
      local frames = map[a]
      frames[#frames + 1] = raw.lua_frame(line, flags, name, source)
   end
   return map
end

-- FRAMES with ljleak's trampoline and wrapper taken out, and the Lua frames the trampoline names.
local function with_lua(frames, map)
   for i, f in ipairs(frames) do
      local a = not f["function"] and not f.object and f.address and tonumber(f.address)
      local lua = a and map[a - a % 32]
      if lua then
         local out = {}
         for k = 1, i - 1 do out[#out + 1] = frames[k] end
         local k = i + 1
         while frames[k] and (frames[k].object or ""):match("libljleak_vg%.so$") do k = k + 1 end
         for j = k, #frames do out[#out + 1] = frames[j] end
         return out, lua
      end
   end
   return frames, nil
end

-- The process of one document (read_document's DOC) in ljleak.raw's proc shape: each leak record
-- its own site, with its frames (named already: proc.symbolized) and, when MAP (from the
-- process's vglua file) names its trampoline, its Lua frames; a record's test is its context.
local function shaped(doc, map)
   local proc = {pid = doc.pid, ppid = doc.ppid, exe = doc.exe, command = doc.command, protocol = doc.protocol,
                 truncated = doc.truncated, finished = doc.finished, fatal_signal = doc.fatal_signal,
                 suppcounts = doc.suppcounts, errors = doc.errors, symbolized = true,
                 modules = {}, sites = {}, leaks = {}, lua = {}, ctx = {}}
   local ctx_of = {}
   for i, rec in ipairs(doc.leaks) do
      local frames, lua = rec.frames, nil
      if map then frames, lua = with_lua(frames, map) end
      local ctx = rec.test and ctx_of[rec.test]
      if rec.test and not ctx then
         ctx = #proc.ctx + 1
         proc.ctx[ctx] = {tag = rec.test}
         ctx_of[rec.test] = ctx
      end
      proc.sites[i] = {id = i, frames = frames, ctx = ctx, lua = lua and i}
      proc.lua[i] = lua
      proc.leaks[i] = {kind = rec.kind, site = i, blocks = rec.blocks, bytes = rec.bytes}
   end
   for _, rec in ipairs(map and doc.errors or {}) do
      for _, aux in ipairs(rec.aux or {}) do
         if aux.frames then aux.frames, aux.lua = with_lua(aux.frames, map) end
      end
   end
   return proc
end

-- A <stack> as frames: {function, mangled, file, dir, line, object}; a frame with no function also
-- keeps its address (a frame in no object, e.g. JIT code, has only the address). Memcheck runs with
-- --demangle=no: a C++ name is demangled here, as the tracker's are. A function inlined at a call
-- is a frame of its own with the same <ip> as the next one (--read-inline-info): `inlined = true`.
local function frames_of(stack)
   local frames, ips = {}, {}
   for _, f in ipairs(stack and stack.kids or {}) do
      if f.name == "frame" then
         local ip = child_text(f, "ip")
         local frame = symbolize.name_frame({
            file = child_text(f, "file"), dir = child_text(f, "dir"),
            line = tonumber(child_text(f, "line") or ""), object = child_text(f, "obj"),
         }, child_text(f, "fn"))
         if not frame["function"] then frame.address = hex(ip) end
         if ip and ip == ips[#frames] then frames[#frames].inlined = true end
         frames[#frames + 1] = frame
         ips[#frames] = ip
      end
   end
   return frames
end

-- The memcheck suppression kind (and extra line) of an error, as `--gen-suppressions` would write it.
local function supp_kind_of(kind, what)
   what = what or ""
   if kind == "InvalidRead" or kind == "InvalidWrite" then
      local size = what:match("of size (%d+)")
      return "Memcheck", size and "Addr" .. size or nil
   elseif kind == "UninitValue" then
      local size = what:match("of size (%d+)")
      return "Memcheck", size and "Value" .. size or nil
   elseif kind == "UninitCondition" then
      return "Memcheck", "Cond"
   elseif kind == "InvalidFree" or kind == "MismatchedFree" then
      return "Memcheck", "Free"
   elseif kind == "SyscallParam" then
      return "Memcheck", "Param", what:match("^Syscall param (%S+)")
   elseif kind == "Overlap" then
      return "Memcheck", "Overlap"
   elseif kind == "InvalidJump" then
      return "Memcheck", "Jump"
   elseif kind == "ClientCheck" then
      return "Memcheck", "User"
   elseif kind == "InvalidMemPool" then
      return "Memcheck", "Mempool"
   elseif kind == "ReallocSizeZero" then
      return "Memcheck", "ReallocZero"
   elseif kind == "FishyValue" then
      local arg, fn = what:match("^Argument '([^']*)' of function (%S+)")
      return "Memcheck", "FishyValue", fn and ("%s(%s)"):format(fn, arg) or nil
   elseif kind == "FdBadClose" or kind == "FdNotClosed" or kind == "FdBadUse" then
      return "CoreError", kind
   end
end

-- Bytes of a leak record that are its own: a definite (or possible) record's <leakedbytes>
-- includes the indirect blocks it holds ("96 (64 direct, 32 indirect) bytes ..."), which also
-- have their own indirect record. The leak checks a program asks for between tests
-- (VALGRIND_DO_ADDED_LEAK_CHECK) add the increase after each number: "64 (+64) (32 (+32) direct,
-- 32 (+32) indirect) bytes in 1 (+1) blocks ..."; <leakedbytes> is the total there too.
local function direct_bytes(xwhat)
   local bytes = tonumber(child_text(xwhat, "leakedbytes") or "") or 0
   local text = (child_text(xwhat, "text") or ""):gsub(" %([+-][%d,]+%)", "")
   local indirect = text:match("^[%d,]+ %([%d,]+ direct, ([%d,]+) indirect%)")
   if indirect then bytes = bytes - tonumber((indirect:gsub(",", ""))) end
   return bytes
end

-- One <error> element: a leak record {kind, blocks, bytes, frames}, or an error record
-- {kind, message, count, frames, aux = {{what, frames}...}, unique, supp_tool, supp_kind, supp_extra, fd, path}.
local function read_error(node)
   local kind = child_text(node, "kind") or "?"
   local xwhat = child(node, "xwhat")
   if LEAK_KINDS[kind] then
      local blocks = tonumber(xwhat and child_text(xwhat, "leakedblocks") or "") or 0
      return "leak", {kind = LEAK_KINDS[kind], blocks = blocks, bytes = xwhat and direct_bytes(xwhat) or 0,
                      frames = frames_of(child(node, "stack"))}
   end
   local rec = {kind = kind, message = child_text(node, "what") or (xwhat and child_text(xwhat, "text")) or kind,
                unique = child_text(node, "unique"), count = 1, aux = {}, tid = tonumber(child_text(node, "tid") or "")}
   local last_aux
   for _, k in ipairs(node.kids) do
      if k.name == "stack" then
         if not rec.frames then
            rec.frames = frames_of(k)
         elseif last_aux and not last_aux.frames then
            last_aux.frames = frames_of(k)
         else
            rec.aux[#rec.aux + 1] = {frames = frames_of(k)}
         end
      elseif k.name == "auxwhat" or k.name == "xauxwhat" then
         last_aux = {what = k.name == "auxwhat" and k.text or child_text(k, "text")}
         rec.aux[#rec.aux + 1] = last_aux
      elseif k.name == "origin" then
         last_aux = {what = child_text(k, "what"), frames = frames_of(child(k, "stack"))}
         rec.aux[#rec.aux + 1] = last_aux
      end
   end
   rec.frames = rec.frames or {}
   for _, aux in ipairs(rec.aux) do
      if aux.frames and #aux.frames == 0 then aux.frames = nil end
   end
   if #rec.aux == 0 then rec.aux = nil end
   rec.fd = tonumber(child_text(node, "fd") or "")
   rec.path = child_text(node, "path")
   rec.supp_tool, rec.supp_kind, rec.supp_extra = supp_kind_of(kind, rec.message)
   return "error", rec
end

-- A leak record's identity across Valgrind's leak checks: kind and stack.
local function leak_key(rec)
   local t = {rec.kind}
   for _, f in ipairs(rec.frames or {}) do
      t[#t + 1] = table.concat({f["function"] or "", f.object or "", f.file or "", f.line or "",
                                f.address or ""}, "|")
   end
   return table.concat(t, "\n")
end

-- The records of one <valgrindoutput> ROOT (from parse_tree): proc = {pid, ppid, exe, command,
-- protocol, leaks, errors, suppcounts, finished, fatal_signal}; pid is nil when ROOT has none.
-- FINISHED: the program had ended before ROOT's first record (a piece of a document).
local function read_document(root, finished)
   local function number(tag) return tonumber(child_text(root, tag) or "") end
   local proc = {leaks = {}, errors = {}, suppcounts = {}, pid = number("pid"), ppid = number("ppid"),
                 protocol = number("protocolversion")}
   local args = child(root, "args")
   local argv = args and child(args, "argv")
   if argv then
      proc.exe = child_text(argv, "exe")
      proc.command = {proc.exe}
      for _, k in ipairs(argv.kids) do
         if k.name == "arg" then proc.command[#proc.command + 1] = k.text end
      end
   end
   local by_unique = {}
   -- Leak checks the program asked for while it ran (ljleak.busted, between tests) come before the
   -- FINISHED status; each follows an "ljleak-context NAME" marker. Their definite and indirect
   -- records are what was lost since the previous check, by stack: they go to that context, and
   -- the final check's records keep only what no context had.
   local context, attributed = nil, {}
   for _, node in ipairs(root.kids) do
      if node.name == "error" and node.closed then
         local class, rec = read_error(node)
         if class == "leak" and not finished then
            if rec.kind == "definite" or rec.kind == "indirect" then
               local key = leak_key(rec)
               local a = attributed[key] or {blocks = 0, bytes = 0}
               if rec.blocks > a.blocks or rec.bytes > a.bytes then
                  proc.leaks[#proc.leaks + 1] = {kind = rec.kind, frames = rec.frames, test = context,
                                                 blocks = rec.blocks - a.blocks, bytes = rec.bytes - a.bytes}
                  attributed[key] = {blocks = rec.blocks, bytes = rec.bytes}
               end
            end
         elseif class == "leak" then
            local a = attributed[leak_key(rec)]
            if a then rec.blocks, rec.bytes = rec.blocks - a.blocks, rec.bytes - a.bytes end
            if rec.blocks > 0 then proc.leaks[#proc.leaks + 1] = rec end
         else
            proc.errors[#proc.errors + 1] = rec
            if rec.unique then by_unique[rec.unique] = rec end
         end
      elseif node.name == "errorcounts" and node.closed then
         for _, pair in ipairs(node.kids) do
            local rec = by_unique[child_text(pair, "unique") or ""]
            if rec then rec.count = tonumber(child_text(pair, "count") or "") or rec.count end
         end
      elseif node.name == "suppcounts" and node.closed then
         for _, pair in ipairs(node.kids) do
            local n = tonumber(child_text(pair, "count") or "")
            if n then proc.suppcounts[#proc.suppcounts + 1] = {name = child_text(pair, "name"), count = n} end
         end
      elseif node.name == "clientmsg" then
         local marked = (child_text(node, "text") or ""):match("^ljleak%-context (.-)%s*$")
         if marked then context = marked ~= "-" and marked or nil end
      elseif node.name == "status" and child_text(node, "state") == "FINISHED" then
         finished = true
      elseif node.name == "fatal_signal" and node.closed then
         proc.fatal_signal = child_text(node, "signame") or ("signal " .. (child_text(node, "signo") or "?"))
      end
   end
   proc.finished = finished
   proc.truncated = not (root.closed and finished) or nil
   return proc
end

local plural = util.plural

local function line_at(text, pos)
   local _, n = text:sub(1, pos - 1):gsub("\n", "")
   return n + 1
end

-- The top-level elements where reading can start again after bad XML.
local RESUME = {"<error>", "<status>", "<clientmsg>", "<errorcounts>", "<suppcounts>", "<fatal_signal>"}

-- The first byte of TEXT from FROM to TO where a line starts with one of RESUME, or nil.
local function resume_at(text, from, to)
   local best
   for _, tag in ipairs(RESUME) do
      local s = text:find("\n" .. tag, from, true)
      if s and s < to and (not best or s < best) then best = s + 1 end
   end
   return best
end

local WRAPPER = "<valgrindoutput>\n"

-- Parse the TEXT of one XML file (NAME: its path; MAP: the Lua frames of its process's trampolines,
-- from read_lua_frames). Returns procs (ljleak.raw's shape, and `name`), and problems:
-- {pid = N or nil, message}, one per thing that was not one whole report.
-- Nothing that parses is lost: a process writes one document, which begins with an XML
-- declaration; a file with two was written by two processes (a pid reused in another PID
-- namespace), and each is read. After the end of a document, or after bad XML, reading starts
-- again at the next top-level record (another process that wrote into the same file, e.g. through
-- a descriptor shared across an unusual fork or clone): those records have no pid. A document cut
-- short keeps the records written so far.
function M.parse_file(text, name, map)
   local procs, problems = {}, {}
   local function problem(pid, fmt, ...)
      problems[#problems + 1] = {pid = pid, message = fmt:format(...)}
   end
   local segments, from = {}, 1
   while true do
      local s = text:find("<?xml ", from, true)
      if not s then break end
      segments[#segments + 1] = {from = s}
      from = s + 1
   end
   if not segments[1] or text:sub(1, segments[1].from - 1):find("%S") then
      table.insert(segments, 1, {from = 1, orphan = true})
   end
   for i, seg in ipairs(segments) do seg.to = segments[i + 1] and segments[i + 1].from or #text + 1 end
   local i, documents = 1, 0
   while segments[i] do
      local seg = segments[i]
      i = i + 1
      local prefix = seg.orphan and WRAPPER or ""
      local root, err, pos, at_end = parse_tree(prefix .. text:sub(seg.from, seg.to - 1))
      local stop = seg.from + (pos or 1) - 1 - #prefix   -- where the parser stopped, in TEXT
      local proc
      if root and root.name == "valgrindoutput" then
         -- A piece without the FINISHED status comes after it: its leak records are the final ones.
         local finished = seg.orphan and true
         for _, node in ipairs(seg.orphan and root.kids or {}) do
            if node.name == "status" and child_text(node, "state") == "FINISHED" then finished = false end
         end
         proc = shaped(read_document(root, finished), map)
         if seg.orphan then
            proc.pid = seg.pid
            if #proc.leaks + #proc.errors == 0 then proc = nil end
         else
            documents = documents + 1
            if documents == 1 and not proc.pid then
               proc.pid = tonumber(name:match("vg%.(%d+)[^/]*%.xml$"))
            end
         end
      end
      if not seg.orphan and not (root and root.name == "valgrindoutput") then
         problem(nil, "line %d: not Valgrind XML output%s", line_at(text, seg.from), err and " (" .. err .. ")" or "")
      end
      if proc then
         proc.name = name
         procs[#procs + 1] = proc
         local who = proc.pid and ("process " .. proc.pid) or "a process"
         if seg.orphan and not seg.pid then
            problem(nil, "line %d: %s and %s of a process whose report has no start (it wrote into this "
               .. "file through a descriptor it shares with another process); kept, with no pid",
               line_at(text, seg.from), plural(#proc.leaks, "leak record"), plural(#proc.errors, "error"))
         elseif documents == 2 then
            problem(proc.pid, "line %d: a second report in this file, of %s: two processes had the same pid "
               .. "(in different PID namespaces?); both are read", line_at(text, seg.from), who)
         end
         if proc.truncated and (at_end or not err) then
            problem(proc.pid, "truncated: %s ended before Valgrind finished its report (killed?); kept the %s "
               .. "and %s it had written%s", who, plural(#proc.errors, "error"), plural(#proc.leaks, "leak record"),
               proc.finished and "" or ", and it had not made its leak check at exit")
         end
      end
      if err and not at_end then
         -- After the end of a document: another process's records. After bad XML: the rest of
         -- the same document, most likely (two writers can garble each other's records).
         local junk = err == "junk after document element"
         local again = junk and stop or resume_at(text, stop, seg.to)
         local pid = proc and proc.pid
         local rest = not again and "the rest is lost"
            or ("reading on from line %d%s"):format(line_at(text, again),
                                                     junk and "" or ", under pid " .. tostring(pid))
         problem(pid, "line %d: %s; %s", line_at(text, stop),
            junk and "output after the end of the report" or ("bad XML (%s)"):format(err), rest)
         if again then
            table.insert(segments, i, {from = again, to = seg.to, orphan = true, pid = (not junk) and pid or nil})
         end
      end
   end
   if #procs == 0 and #problems == 0 then
      problem(tonumber(name:match("vg%.(%d+)[^/]*%.xml$")), "not Valgrind XML output")
   end
   return procs, problems
end

-- Parse TEXT, one process's XML (NAME for messages). Returns its first report, as M.parse_file
-- reads it, or nil and a message when there is none.
function M.parse(text, name)
   name = name or "valgrind.xml"
   local procs, problems = M.parse_file(text, name)
   if procs[1] then return procs[1] end
   return nil, ("%s: %s"):format(name, problems[1].message)
end

-- The heap totals of Valgrind's xtree memory file at PATH (--xtree-memory=full, callgrind format:
-- its `events:` line names the columns of its `totals:` line), in the shape of ljleak.model's heap
-- totals; nil if there is no such file (a process that did not finish) or it has no totals.
function M.read_heap(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local names, totals
   for line in f:lines() do
      local rest = line:match("^events:%s*(.*)$")
      if rest then
         names = {}
         for w in rest:gmatch("%S+") do names[#names + 1] = w end
      end
      rest = line:match("^totals:%s*(.*)$")
      if rest then
         totals = {}
         for w in rest:gmatch("%d+") do totals[#totals + 1] = tonumber(w) end
      end
   end
   f:close()
   if not names or not totals then return nil end
   local v = {}   -- ("totals: (null)": nothing was allocated)
   for i, n in ipairs(names) do v[n] = totals[i] or 0 end
   if not (v.curB and v.curBk and v.totB and v.totBk and v.totFdBk) then return nil end
   return {in_use = {blocks = v.curBk, bytes = v.curB}, allocs = v.totBk, frees = v.totFdBk, allocated = v.totB}
end

-- Valgrind's XML files in a run directory: vg.PID.ID.xml (see ljleak.engine.valgrind's command).
local XML_NAME = "^vg%.(%d+)%.?%x*%.xml$"
M.XML_NAME = XML_NAME

-- Parse every XML file in RUN_DIR. Returns procs (sorted by pid) and problems: {pid, file, message}
-- for each file that was unreadable, malformed or truncated (what it had is kept).
function M.collect(run_dir)
   local procs, problems = {}, {}
   local names = {}
   local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
   if not ok then return procs, {{file = run_dir, message = tostring(iter)}} end
   for n in iter, dir_obj do
      if n:match(XML_NAME) then names[#names + 1] = n end
   end
   table.sort(names)
   for _, n in ipairs(names) do
      local path = run_dir .. "/" .. n
      local text, err = util.read_file(path)
      if not text then
         problems[#problems + 1] = {pid = tonumber(n:match(XML_NAME)), file = path, message = "cannot read: " .. err}
      elseif text ~= "" then   -- empty: Valgrind had not written anything yet
         local map = M.read_lua_frames((path:gsub("/vg%.([^/]*)%.xml$", "/vglua.%1")))
         local got, found = M.parse_file(text, path, map)
         -- (two processes with one name share one xtree file too: then neither gets its totals)
         if #got == 1 then got[1].heap = M.read_heap((path:gsub("/vg%.([^/]*)%.xml$", "/xt.%1.kcg"))) end
         for _, proc in ipairs(got) do procs[#procs + 1] = proc end
         for _, p in ipairs(found) do
            p.file = path
            problems[#problems + 1] = p
         end
      end
   end
   table.sort(procs, function(a, b) return (a.pid or 0) < (b.pid or 0) end)
   return procs, problems
end

return M
