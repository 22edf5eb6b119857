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

-- Options that ljleak sets itself and a user may not change through --valgrind-opts.
local RESERVED = {"--tool", "--xml", "--xml-file", "--xml-fd", "--xml-socket", "--leak-check",
                  "--show-leak-kinds", "--trace-children", "--log-fd", "--log-file", "--log-socket"}

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
-- (or nil), or nil and a message naming an option ljleak sets itself.
function M.parse_extra(texts)
   local words, num_callers = {}, nil
   for _, text in ipairs(texts or {}) do
      for w in text:gmatch("%S+") do
         local name = w:match("^(%-%-[^=]+)") or w
         for _, r in ipairs(RESERVED) do
            if name == r then
               return nil, ("--valgrind-opts: %s is set by ljleak and cannot be changed"):format(name)
            end
         end
         if name == "--num-callers" then
            num_callers = tonumber(w:match("=(%d+)$"))
            if not num_callers then return nil, ("--valgrind-opts: bad %s"):format(w) end
         end
         words[#words + 1] = w
      end
   end
   return words, num_callers
end

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
      "--xml-file=" .. opts.dir .. "/vg.%p.xml",
   }
   for _, w in ipairs(opts.extra or {}) do argv[#argv + 1] = w end
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
-- `closed`. Returns the root (nil if none), and an error message from the XML parser, if any.
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
   local ok, err = parser:parse(text)
   if ok then ok, err = parser:parse() end
   parser:close()
   for _, node in ipairs(stack) do
      if node.parts then
         node.text = table.concat(node.parts)
         node.parts = nil
      end
   end
   return top.kids[1], (not ok) and err or nil
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
-- have their own indirect record.
local function direct_bytes(xwhat)
   local bytes = tonumber(child_text(xwhat, "leakedbytes") or "") or 0
   local indirect = (child_text(xwhat, "text") or ""):match("^[%d,]+ %([%d,]+ direct, ([%d,]+) indirect%)")
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

-- Parse one XML file's TEXT (NAME for messages). Returns
-- proc = {name, pid, ppid, exe, command, protocol, leaks, errors, suppcounts, truncated, fatal_signal}
-- or nil and a message when the text is not Valgrind XML at all.
function M.parse(text, name)
   name = name or "valgrind.xml"
   local root, err = parse_tree(text)
   if not root or root.name ~= "valgrindoutput" then
      return nil, ("%s: not Valgrind XML output%s"):format(name, err and " (" .. err .. ")" or "")
   end
   local function number(tag) return tonumber(child_text(root, tag) or "") end
   local proc = {name = name, leaks = {}, errors = {}, suppcounts = {}, pid = number("pid"), ppid = number("ppid"),
                 protocol = number("protocolversion")}
   if not proc.pid then proc.pid = tonumber(name:match("vg%.(%d+)%.xml$")) end
   local args = child(root, "args")
   local argv = args and child(args, "argv")
   if argv then
      proc.exe = child_text(argv, "exe")
      proc.command = {proc.exe}
      for _, k in ipairs(argv.kids) do
         if k.name == "arg" then proc.command[#proc.command + 1] = k.text end
      end
   end
   local finished, by_unique = false, {}
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
   proc.truncated = not (root.closed and finished) or nil
   if err and not proc.truncated then
      return nil, ("%s: bad XML (%s)"):format(name, err)
   end
   return proc
end

-- Read and parse the XML file at PATH.
M.read = util.reader(M.parse)

-- Parse every vg.<pid>.xml in RUN_DIR. Returns procs (sorted by pid) and problems
-- ({pid, message}: unreadable files, and truncated ones, whose records so far are kept).
function M.collect(run_dir)
   local procs, problems = {}, {}
   local names = {}
   local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
   if not ok then return procs, {{message = tostring(iter)}} end
   for n in iter, dir_obj do
      if n:match("^vg%.%d+%.xml$") then names[#names + 1] = n end
   end
   table.sort(names)
   for _, n in ipairs(names) do
      local path = run_dir .. "/" .. n
      local pid = tonumber(n:match("(%d+)"))
      local proc, err = M.read(path)
      if proc then
         procs[#procs + 1] = proc
         if proc.truncated then
            problems[#problems + 1] = {pid = pid, message = ("%s: truncated: process %d ended before Valgrind "
               .. "finished its report (killed?); reporting the %d error%s it had written, and no leak check")
               :format(path, pid, #proc.errors, #proc.errors == 1 and "" or "s")}
         end
      elseif (lfs.attributes(path, "size") or 0) > 0 then
         problems[#problems + 1] = {pid = pid, message = err}
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
                 sites = {}, leaks = {}, stats = {}, ctx = {}}
      local ctx_of = {}
      for i, rec in ipairs(proc.leaks) do
         local ctx = rec.test and ctx_of[rec.test]
         if rec.test and not ctx then
            ctx = #p.ctx + 1
            p.ctx[ctx] = {tag = rec.test}
            ctx_of[rec.test] = ctx
         end
         p.sites[i] = {id = i, frames = rec.frames, ctx = ctx}
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
         local pid = tonumber(n:match("^vg%.(%d+)%.xml$") or "")
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
