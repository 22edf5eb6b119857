-- The Valgrind engine: the memcheck command line ljleak runs, and the reader of its XML output
-- (protocol 4, and 5 with --track-fds) into the same leak records the tracker gives, plus records
-- for memcheck's other errors (invalid reads and writes, uninitialised values, bad frees...).
local util = require "ljleak.util"
local lfs = require "lfs"
local lxp = require "lxp"
local ptime = require "posix.time"

local report = require "ljleak.report"
local symbolize = require "ljleak.symbolize"

local M = {}

M.DEFAULT_NUM_CALLERS = 12   -- Valgrind's default --num-callers

local LEAK_KINDS = {
   Leak_DefinitelyLost = "definite", Leak_IndirectlyLost = "indirect",
   Leak_PossiblyLost = "possible", Leak_StillReachable = "reachable",
}

-- Options a user may not give through --valgrind-opts, and why: ljleak sets them itself, or they
-- change what it reads (the leak kinds Valgrind checks and shows, where its output goes, which
-- processes write a report) or the exit status it chooses.
local SET = "is set by ljleak and cannot be changed"
local KINDS = "changes the leak kinds Valgrind checks or shows; ljleak needs all of them (use ljleak's "
   .. "--fail-on, --show-reachable and suppressions)"
local OUTPUT = "changes where Valgrind's output goes; ljleak reads one XML file per process from its run directory"
local REFUSED = {
   ["--tool"] = SET, ["--xml"] = SET, ["--xml-file"] = SET, ["--leak-check"] = SET, ["--show-leak-kinds"] = SET,
   ["--trace-children"] = SET, ["--error-limit"] = SET, ["--keep-debuginfo"] = SET, ["--soname-synonyms"] = SET,
   ["--show-reachable"] = KINDS, ["--show-possibly-lost"] = KINDS, ["--errors-for-leak-kinds"] = KINDS,
   ["--xtree-leak"] = "makes Valgrind write its leak check to an xtree file instead of its XML",
   ["--xml-fd"] = OUTPUT, ["--xml-socket"] = OUTPUT, ["--log-fd"] = OUTPUT, ["--log-file"] = OUTPUT,
   ["--log-socket"] = OUTPUT,
   ["--child-silent-after-fork"] = "would leave forked children without a report",
   ["--gen-suppressions"] = "is ljleak's own option (--gen-suppressions=FILE); Valgrind's asks on the terminal",
   ["--error-exitcode"] = "is ljleak's own option: ljleak chooses the exit status",
   ["--exit-on-first-error"] = "stops the program at its first error, before its leak check",
   ["-h"] = "makes Valgrind print its help instead of running the program", ["--help"] = "makes Valgrind print "
      .. "its help instead of running the program", ["--version"] = "makes Valgrind print its version instead of "
      .. "running the program",
}

M.REFUSED = REFUSED

-- Valgrind copies --xml-user-comment into its XML as it is: text that is not well-formed there
-- (a & or < of its own) is escaped, so that the comment shows as written.
local function user_comment(value)
   local parser = lxp.new({})
   local ok = parser:parse("<c>" .. value .. "</c>")
   if ok then ok = parser:parse() end
   pcall(parser.close, parser)
   if ok then return value end
   return (value:gsub("[&<>]", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;"}))
end

-- -- The command -----------------------------------------------------------------------------

-- The valgrind program: $LJLEAK_VALGRIND, or `valgrind` on PATH. Nil and a message if missing.
function M.find()
   local path = os.getenv("LJLEAK_VALGRIND")
   if path and path ~= "" then
      if lfs.attributes(path, "mode") == "file" then return path end
      return nil, ("LJLEAK_VALGRIND=%s: no such file"):format(path)
   end
   for dir in ((os.getenv("PATH") or "/usr/bin:/bin") .. ":"):gmatch("([^:]*):") do
      local candidate = (dir == "" and "." or dir) .. "/valgrind"
      if lfs.attributes(candidate, "mode") == "file" then return candidate end
   end
   return nil, "valgrind was not found on PATH: install it (Debian/Ubuntu: apt-get install valgrind; "
      .. "Fedora: dnf install valgrind)"
end

-- Split the text of --valgrind-opts into words. Returns the words and the --num-callers they set
-- (or nil), or nil and a one-line message naming an option ljleak refuses (M.REFUSED says why).
function M.parse_extra(texts)
   local words, num_callers = {}, nil
   for _, text in ipairs(texts or {}) do
      for w in text:gmatch("%S+") do
         local name = w:match("^(%-%-?[^=]+)")
         if not name then
            return nil, ("--valgrind-opts: '%s' is not an option (Valgrind would run it as the program)"):format(w)
         end
         if REFUSED[name] then return nil, ("--valgrind-opts: %s %s"):format(name, REFUSED[name]) end
         if name == "--num-callers" then
            num_callers = tonumber(w:match("=(%d+)$"))
            if not num_callers then return nil, ("--valgrind-opts: bad %s"):format(w) end
         elseif name == "--xml-user-comment" then
            w = name .. "=" .. user_comment(w:sub(#name + 2))
         end
         words[#words + 1] = w
      end
   end
   return words, num_callers
end

-- The environment variable whose value is in each XML file's name, beside the pid: Valgrind
-- expands only %p (the pid, which a process in another PID namespace shares with others),
-- %n (a count that starts again at 1 in each process) and %q{VAR} (VAR's value: a process whose
-- environment lacks VAR does not start). libljleak_vg.so gives each forked child a new value
-- (pthread_atfork) and puts the variable back into an environment given to exec without it.
M.ID_VAR = "LJLEAK_VG_ID"

-- The first process's value; 16 hex digits, as libljleak_vg.so writes them.
M.FIRST_ID = "0000000000000000"

-- The valgrind argv (without CMD) for a run writing its XML into DIR. OPTS.valgrind: the program;
-- OPTS.extra: more options (from M.parse_extra), put last.
function M.command(opts)
   local argv = {opts.valgrind or "valgrind",
      "--tool=memcheck",
      "--leak-check=full",
      "--show-leak-kinds=all",
      "--keep-debuginfo=yes",        -- else frames in libraries unloaded before exit are ???
      "--demangle=no",               -- C++ names as the tracker has them; demangled as the tracker does
      "--trace-children=yes",
      "--error-limit=no",            -- ljleak applies the suppressions, so every error must come out
      "--xml=yes",
      -- ljleak's own allocation functions (libljleak_vg.so) must run: they give records Lua frames.
      "--soname-synonyms=somalloc=nouserintercepts",
      -- the frames asked for (default 12), plus the two of ljleak's the reader takes out again
      "--num-callers=" .. ((opts.num_callers or M.DEFAULT_NUM_CALLERS) + 2),
      -- vg.PID.ID.xml; a % of DIR's own (from TMPDIR) would be expanded: %% is one %.
      "--xml-file=" .. opts.dir:gsub("%%", "%%%%") .. "/vg.%p.%q{" .. M.ID_VAR .. "}.xml",
   }
   local callers = #argv - 1
   for _, w in ipairs(opts.extra or {}) do
      local n = w:match("^%-%-num%-callers=(%d+)$")
      if n then argv[callers] = "--num-callers=" .. (tonumber(n) + 2) else argv[#argv + 1] = w end
   end
   return argv
end

-- LUA_INIT for the program under Valgrind: with JIT "off", every LuaJIT process turns its JIT off
-- before anything runs (other Lua interpreters skip it); then the user's own LUA_INIT runs.
-- Nil when there is nothing to run.
function M.lua_init(jit, user)
   local parts = {}
   if jit == "off" then parts[1] = "if jit then jit.off() end" end
   if user and user ~= "" then
      parts[#parts + 1] = user:sub(1, 1) == "@" and ("dofile(%q)"):format(user:sub(2)) or user
   end
   return #parts > 0 and table.concat(parts, "\n") or nil
end

-- -- Reading the XML -------------------------------------------------------------------------

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

local function unescape(s)
   return (s:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end))
end

-- The trampolines of one process: address -> Lua frames ({source, line, function}), or nil.
function M.read_lua_frames(path)
   local text = util.read_file(path)
   if not text or not text:match("^ljleak%-vglua 1\n") then return nil end
   local map = {}
   for addr, line, flags, name, source in text:gmatch("lua 0x(%x+) (%-?%d+) (%d+) (%S+) ([^\n]*)\n") do
      local a = tonumber(addr, 16)
      map[a] = map[a] or {}
      local frames = map[a]
      line = tonumber(line)
      frames[#frames + 1] = {source = source, line = line >= 0 and line or nil,
                             ["function"] = name ~= "?" and unescape(name) or nil,
                             approximate = tonumber(flags) % 2 == 1 or nil}
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

-- Give each record of PROCS (from one file) its Lua frames, from that process's vglua file.
local function attach_lua_frames(procs, path)
   local map = M.read_lua_frames((path:gsub("/vg%.([^/]*)%.xml$", "/vglua.%1")))
   if not map then return end
   for _, proc in ipairs(procs) do
      for _, rec in ipairs(proc.leaks) do rec.frames, rec.lua = with_lua(rec.frames, map) end
      for _, rec in ipairs(proc.errors) do
         for _, aux in ipairs(rec.aux or {}) do
            if aux.frames then aux.frames, aux.lua = with_lua(aux.frames, map) end
         end
      end
   end
end

-- A <stack> as frames: {function, mangled, file, dir, line, object}; a frame with no function also
-- keeps its address (a frame in no object, e.g. JIT code, has only the address). Memcheck runs with
-- --demangle=no: a C++ name is demangled here, as the tracker's are.
local function frames_of(stack)
   local frames = {}
   for _, f in ipairs(stack and stack.kids or {}) do
      if f.name == "frame" then
         local frame = symbolize.name_frame({
            file = child_text(f, "file"), dir = child_text(f, "dir"),
            line = tonumber(child_text(f, "line") or ""), object = child_text(f, "obj"),
         }, child_text(f, "fn"))
         if not frame["function"] then frame.address = hex(child_text(f, "ip")) end
         frames[#frames + 1] = frame
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

local function plural(n, word)
   return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

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

-- Parse the TEXT of one XML file (NAME: its path). Returns procs, as read_document gives them (and
-- `name`), and problems: {pid = N or nil, message}, one per thing that was not one whole report.
-- Nothing that parses is lost: a process writes one document, which begins with an XML
-- declaration; a file with two was written by two processes (a pid reused in another PID
-- namespace), and each is read. After the end of a document, or after bad XML, reading starts
-- again at the next top-level record (another process that wrote into the same file, e.g. through
-- a descriptor shared across an unusual fork or clone): those records have no pid. A document cut
-- short keeps the records written so far.
function M.parse_file(text, name)
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
         proc = read_document(root, finished)
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

-- Valgrind's XML files in a run directory: vg.PID.ID.xml (see M.command).
local XML_NAME = "^vg%.(%d+)%.?%x*%.xml$"

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
         local got, found = M.parse_file(text, path)
         attach_lua_frames(got, path)
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

-- -- Building the report ---------------------------------------------------------------------

-- report.build takes raw sites and a symbolizer; Valgrind's frames are symbolized already.
local passthrough = {frames = function(_, _, site) return site.frames end}

-- The report (report.lua's shape, engine "valgrind") for PROCS from M.collect; OPTS as for
-- report.build. Adds `errors`: memcheck's other errors, by pid, biggest count first.
function M.build(procs, opts)
   local shaped, errors = {}, {}
   for _, proc in ipairs(procs) do
      local p = {pid = proc.pid, ppid = proc.ppid, exe = proc.exe, truncated = proc.truncated,
                 sites = {}, leaks = {}, stats = {}, ctx = {}, lua = {}}
      local ctx_of = {}
      for i, rec in ipairs(proc.leaks) do
         local ctx = rec.test and ctx_of[rec.test]
         if rec.test and not ctx then
            ctx = #p.ctx + 1
            p.ctx[ctx] = {tag = rec.test}
            ctx_of[rec.test] = ctx
         end
         p.sites[i] = {id = i, frames = rec.frames, ctx = ctx, lua = rec.lua and i}
         p.lua[i] = rec.lua
         p.leaks[i] = {kind = rec.kind, site = i, blocks = rec.blocks, bytes = rec.bytes}
      end
      shaped[#shaped + 1] = p
      for _, rec in ipairs(proc.errors) do
         rec.pid = proc.pid
         errors[#errors + 1] = rec
      end
   end
   local o = {}
   for k, v in pairs(opts or {}) do o[k] = v end
   o.engine, o.symbolizer = "valgrind", passthrough
   local rep = report.build(shaped, o)
   for i, proc in ipairs(procs) do
      local entry = rep.processes[i]
      entry.command = proc.command
      entry.fatal_signal = proc.fatal_signal
      entry.stats = nil
   end
   table.sort(errors, function(a, b)
      if a.pid ~= b.pid then return (a.pid or 0) < (b.pid or 0) end
      return a.count > b.count
   end)
   rep.errors = errors
   return rep
end

-- Valgrind's own default suppressions (default.supp) used in PROCS: {name, count}, for the
-- summary's table (Valgrind drops what they match, so only its counts are known).
function M.builtin_suppressions(procs)
   local list, by_name = {}, {}
   for _, proc in ipairs(procs) do
      for _, sc in ipairs(proc.suppcounts) do
         local u = by_name[sc.name]
         if not u then
            u = {name = sc.name, file = "valgrind's default.supp", count = 0, records = 0}
            by_name[sc.name] = u
            list[#list + 1] = u
         end
         u.count = u.count + sc.count
      end
   end
   return list
end

-- -- Progress --------------------------------------------------------------------------------

local alive = util.alive

-- A watcher of RUN_DIR's XML files while Valgrind runs: each call returns how many processes are
-- running (their XML is not finished and they are alive) and how many records they wrote so far,
-- and the pids of those running. Reads only what was appended since the last call.
function M.watcher(run_dir)
   local files = {}
   return function()
      local running, records, pids = 0, 0, {}
      local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
      if not ok then return 0, 0, pids end
      for n in iter, dir_obj do
         local pid = tonumber(n:match(XML_NAME) or "")
         if pid then
            local st = files[n]
            if not st then
               st = {offset = 0, records = 0, tail = "", done = false}
               files[n] = st
            end
            local size = lfs.attributes(run_dir .. "/" .. n, "size") or 0
            if size < st.offset then st.offset, st.records, st.tail, st.done = 0, 0, "", false end
            if size > st.offset then
               local f = io.open(run_dir .. "/" .. n, "rb")
               if f then
                  f:seek("set", st.offset)
                  local data = f:read(size - st.offset) or ""
                  f:close()
                  st.offset = st.offset + #data
                  local text = st.tail .. data
                  local _, count = text:gsub("<error>", "")
                  local _, old = st.tail:gsub("<error>", "")
                  st.records = st.records + count - old
                  if text:find("</valgrindoutput>", 1, true) then st.done = true end
                  st.tail = text:sub(-20)
               end
            end
            records = records + st.records
            if not st.done and alive(pid) then
               running = running + 1
               pids[#pids + 1] = pid
            end
         end
      end
      return running, records, pids
   end
end

-- After the command ended, wait up to TIMEOUT seconds for processes it left running (children
-- that outlive it) to finish their XML. Returns the pids still running then.
function M.wait_for_stragglers(run_dir, timeout)
   local watch = M.watcher(run_dir)
   local waited = 0
   while true do
      local running, _, pids = watch()
      if running == 0 or waited >= timeout then return pids end
      ptime.nanosleep({tv_sec = 0, tv_nsec = 100000000})
      waited = waited + 0.1
   end
end

return M
