-- `ljleak test-nginx [options] -- prove [ARGS...]`: a Test::Nginx suite with every nginx it starts
-- under the engine, each leak named after the block ("t/foo.t TEST 3: name") that started it.
--
-- How nginx is reached: Test::Nginx runs `valgrind -q $TEST_NGINX_USE_VALGRIND nginx ...`, found on
-- PATH, when that variable is set and not a number (and then writes `daemon off`, prints the
-- block's name on stderr just before, and stops nginx with SIGQUIT after the block). ljleak sets it,
-- and puts first on PATH a `valgrind` of its own (the stand-in, M.standin), which gives nginx a
-- report directory of its own in the run directory and runs it under the tracker (LD_PRELOAD) or
-- under the real Valgrind, as the same process (Test::Nginx's signals reach nginx itself).
--
-- Which block: the command's stderr goes through a FIFO that ljleak reads (and copies to its own
-- stderr). The stand-in writes a marker line into the same FIFO; the block name Test::Nginx printed
-- last before it is the block of that nginx. Lua states get ljleak's Lua module through
-- LJLEAK_LUA_BOOT (no LUA_INIT in nginx) and, under the tracker, tag what they allocate with a hash
-- of the nginx.conf they load (ljleak.nginx): a HUP reload's new configuration is a new block.
local bit = require "bit"
local cjson = require "cjson"
local lfs = require "lfs"
local fcntl = require "posix.fcntl"
local stat = require "posix.sys.stat"
local stdlib = require "posix.stdlib"
local ptime = require "posix.time"
local unistd = require "posix.unistd"

local const = require "ljleak.const"
local engines = require "ljleak.engine"
local nginx = require "ljleak.nginx"
local process = require "ljleak.process"
local testbase = require "ljleak.testbase"
local tracker = require "ljleak.engine.tracker"
local util = require "ljleak.util"
local valgrind = require "ljleak.engine.valgrind"
local vgxml = require "ljleak.vgxml"

local M = {}

-- TEST_NGINX_USE_VALGRIND as ljleak sets it: not a number, so Test::Nginx runs the stand-in.
M.USE_VALGRIND = "--ljleak"

local MARK = "\27ljleak-nginx "   -- a stand-in's line in the FIFO: MARK, then escaped fields
local CONFIG = "test-nginx.json"  -- in the run directory, for the stand-in
local FIFO = "stderr.fifo"
local DIR_PREFIX = "nginx."       -- each nginx's report directory: nginx.XXXXXX

-- Fields of a marker line: no blank, control character or '%' inside.
local function escape(s)
   return (tostring(s):gsub("[%%%s%c]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function unescape(s)
   return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function basename(path)
   return path and path:match("([^/]*)$")
end

-- -- The stand-in (runs as `valgrind` in each nginx's place) ----------------------------------

-- The test file that process PID runs: its first argument that is not an option (`perl -w t/foo.t`),
-- as given and as a path from here. Nil if it cannot be read.
local function test_file(pid)
   local text = util.read_file(("/proc/%d/cmdline"):format(pid))
   if not text then return nil end
   local args = {}
   for a in text:gmatch("([^%z]*)%z") do args[#args + 1] = a end
   for i = 2, #args do
      if not args[i]:match("^%-") then
         local shown = args[i]
         if shown:sub(1, 1) == "/" then return shown, shown end
         local cwd = unistd.readlink(("/proc/%d/cwd"):format(pid))
         return shown, cwd and (cwd .. "/" .. shown) or shown
      end
   end
end

-- nginx's configuration file in its arguments ARGV (-c FILE, relative to -p PREFIX), or nil.
local function conf_file(argv)
   local conf, prefix
   local i = 2
   while argv[i] do
      local opt, glued = argv[i]:match("^%-([cp])(.*)$")
      if opt then
         local value = glued ~= "" and glued or argv[i + 1]
         if glued == "" then i = i + 1 end
         if opt == "c" then conf = value else prefix = value end
      end
      i = i + 1
   end
   if not conf then return nil end
   if conf:sub(1, 1) ~= "/" then conf = (prefix or "/usr/share/nginx/"):gsub("/?$", "/") .. conf end
   return conf
end

-- Write the marker line (one write: it cannot interleave with another writer's) into the FIFO.
local function send_marker(fifo, fields)
   local fd = fifo and fcntl.open(fifo, bit.bor(fcntl.O_WRONLY, fcntl.O_NONBLOCK))
   if not fd then return false end
   fcntl.fcntl(fd, fcntl.F_SETFL, 0)
   local parts = {}
   for i, f in ipairs(fields) do parts[i] = escape(f) end
   local ok = unistd.write(fd, MARK .. table.concat(parts, " ") .. "\n")
   unistd.close(fd)
   return ok ~= nil
end

-- 16 hex digits (Valgrind's XML file name: vg.PID.ID.xml).
local function random_id()
   local f = io.open("/dev/urandom", "rb")
   local bytes = f and f:read(8)
   if f then f:close() end
   if not bytes or #bytes < 8 then return bit.tohex(unistd.getpid()) .. bit.tohex(os.time()) end
   return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- Prepend PATH to a LD_PRELOAD list (blanks or colons between its entries).
local function preload(path, list)
   return (list and list ~= "") and (path .. ":" .. list) or path
end

-- The stand-in: ARGV is what Test::Nginx passed to `valgrind`: its options (words that start
-- with '-'), then NAME=value words (Test::Nginx's TEST_NGINX_LD_PRELOAD, put before nginx as a
-- shell assignment would be), then nginx and its arguments. Never returns.
function M.standin(run_dir, argv)
   local cfg = cjson.decode(assert(util.read_file(run_dir .. "/" .. CONFIG)))
   local i = 1
   while argv[i] and argv[i]:match("^%-") do i = i + 1 end
   while argv[i] and argv[i]:match("^[%a_][%w_]*=") do
      local name, value = argv[i]:match("^([^=]+)=(.*)$")
      stdlib.setenv(name, value)
      i = i + 1
   end
   local cmd = {}
   for j = i, #argv do cmd[#cmd + 1] = argv[j] end
   if #cmd == 0 then
      io.stderr:write("valgrind (ljleak test-nginx): no program to run\n")
      os.exit(1)
   end
   -- A report directory for this nginx and its workers (pids are reused in long suites), writable
   -- by workers that run as another user when the suite runs as root.
   local dir = assert(stdlib.mkdtemp(run_dir .. "/" .. DIR_PREFIX .. "XXXXXX"))
   if unistd.geteuid() == 0 then stat.chmod(dir, tonumber("1733", 8)) end
   local conf = conf_file(cmd)
   local text = conf and util.read_file(conf)
   if text then   -- the configuration this nginx starts with, as it is now
      local f = io.open(dir .. "/nginx.conf", "wb")
      if f then
         f:write(text)
         f:close()
      end
   end
   local shown, path = test_file(unistd.getppid())
   send_marker(cfg.fifo, {basename(dir), unistd.getpid(), shown or "-", path or "-", conf or "-"})
   local boot = cfg.boot .. ("\npcall(function() require(\"ljleak.nginx\").boot(%q) end)"):format(conf or "")
   stdlib.setenv(const.ENV.DIR, dir)
   stdlib.setenv(const.ENV.LUA_BOOT, boot)
   local program, args = cmd[1], cmd
   if cfg.engine == "valgrind" then
      stdlib.setenv("LD_PRELOAD", preload(cfg.vglib, os.getenv("LD_PRELOAD")))
      stdlib.setenv(valgrind.ID_VAR, random_id())
      args = valgrind.command_line({valgrind = cfg.valgrind, dir = dir, extra = cfg.valgrind_extra})
      table.insert(args, 2, "-q")
      for _, a in ipairs(cmd) do args[#args + 1] = a end
      program = cfg.valgrind
   else
      stdlib.setenv("LD_PRELOAD", preload(cfg.tracker, os.getenv("LD_PRELOAD")))
   end
   local t = {[0] = args[1]}
   for k = 2, #args do t[k - 1] = args[k] end
   local _, err = unistd.execp(program, t)
   io.stderr:write(("valgrind (ljleak test-nginx): %s: %s\n"):format(program, tostring(err)))
   os.exit(127)
end

-- -- The suite's stderr: block names and markers ----------------------------------------------

local Suite = {}
Suite.__index = Suite

local RECENT = 64   -- stderr lines kept to find a block's name before a marker

local function new_suite()
   return setmetatable({pending = "", line = "", recent = {}, events = {}, by_dir = {}, files = {}},
                       Suite)
end

local NO_FILE = {blocks = {}, names = {}, by_name = {}}

-- The parsed .t file at PATH, or an empty one.
function Suite:tfile(path)
   if not path then return NO_FILE end
   local t = self.files[path]
   if not t then
      t = testbase.read(path) or NO_FILE
      self.files[path] = t
   end
   return t
end

-- A block starts: FILE (as shown, and its path), NAME (nil if unknown), and the nginx.conf it
-- has (CONF_TEXT, its path CONF).
function Suite:event(file, path, name, conf, conf_text)
   local t = self:tfile(path)
   local ev = {index = #self.events + 1, file = file, path = path, name = name, conf = conf,
               block = name and t.by_name[name], text = conf_text,
               test = file and name and (file .. " " .. name) or file or name}
   ev.hash = conf_text and nginx.hash(conf_text)
   self.events[#self.events + 1] = ev
   return ev
end

-- A line of the command's stderr. Under TEST_NGINX_USE_HUP no nginx starts for a block: its
-- name is printed after the reload (the nginx of its file still runs), and the configuration is
-- the block's then.
function Suite:line_done(text)
   local entry = {text = text}
   local a = self.active
   if a and a.t.names[text] and util.alive(a.pid) then
      entry.event = self:event(a.file, a.path, text, a.conf, a.conf and util.read_file(a.conf))
   end
   table.insert(self.recent, entry)
   if #self.recent > RECENT then table.remove(self.recent, 1) end
end

-- A stand-in's marker: DIR PID FILE PATH CONF (escaped, "-" for none): the report directory of
-- the nginx it starts (pid PID), the test file as prove names it and its path, nginx.conf's path.
function Suite:marker(fields)
   local f = {}
   for w in fields:gmatch("%S+") do f[#f + 1] = unescape(w) end
   local dir, pid, file, path, conf = f[1], tonumber(f[2]), f[3], f[4], f[5]
   if not (dir and dir:match("^" .. DIR_PREFIX:gsub("%.", "%%.") .. "%w+$")) then return end
   if file == "-" then file, path = nil, nil end
   if conf == "-" then conf = nil end
   local t = self:tfile(path)
   local conf_text = util.read_file(self.run_dir .. "/" .. dir .. "/nginx.conf")
   local ev
   for k = #self.recent, 1, -1 do
      local entry = self.recent[k]
      if t.names[entry.text] then
         if entry.event and entry.event.path == path then ev = entry.event end
         ev = ev or self:event(file, path, entry.text, conf, conf_text)
         entry.event = ev
         break
      end
   end
   -- No block name printed before it (seen rarely under load; a harness that prints none): the
   -- block is the one whose configuration this nginx.conf holds, when only one does.
   local block = not ev and conf_text and testbase.block_of_conf(t, conf_text)
   ev = ev or self:event(file, path, block and block.name, conf, conf_text)
   self.by_dir[dir] = ev
   self.active = {file = ev.file, path = path, t = t, conf = conf, pid = pid}
   self.recent = {}   -- the lines before a marker belong to it
end

-- Text of the command's stderr: copied to ljleak's stderr, split into lines.
function Suite:text(s)
   if s == "" then return end
   io.stderr:write(s)
   local line = self.line .. s
   for l in line:gmatch("([^\n]*)\n") do self:line_done(l) end
   self.line = line:match("([^\n]*)$")
end

function Suite:feed(data)
   local buf = self.pending .. data
   self.pending = ""
   local pos = 1
   while true do
      local m = buf:find(MARK, pos, true)
      if not m then
         -- A marker's start may be cut at the end of what came so far.
         local keep = 0
         for k = math.min(#MARK - 1, #buf - pos + 1), 1, -1 do
            if buf:sub(-k) == MARK:sub(1, k) then
               keep = k
               break
            end
         end
         self:text(buf:sub(pos, #buf - keep))
         self.pending = buf:sub(#buf - keep + 1)
         return
      end
      self:text(buf:sub(pos, m - 1))
      local nl = buf:find("\n", m, true)
      if not nl then
         self.pending = buf:sub(m)
         return
      end
      self:marker(buf:sub(m + #MARK, nl - 1))
      pos = nl + 1
   end
end

-- Read what the FIFO has. Returns true at its end (no writer left).
function Suite:pump()
   while true do
      local data = unistd.read(self.fd, 65536)
      if not data then return false end
      if data == "" then return true end
      self:feed(data)
   end
end

-- -- Running the command -----------------------------------------------------------------------

-- The stand-in's script: luajit without the user's LUA_* variables, ljleak's module paths.
local STANDIN = [[
#!%s -E
-- ljleak test-nginx: Test::Nginx runs this as valgrind (see ljleak/testnginx.lua).
package.path = %q
package.cpath = %q
require("ljleak.testnginx").standin(%q, arg)
]]

local function write_file(path, text, mode)
   local f = assert(io.open(path, "wb"))
   f:write(text)
   f:close()
   if mode then stat.chmod(path, mode) end
end

-- Report directories of the nginx processes, sorted.
function Suite:dirs()
   local dirs = {}
   for name in lfs.dir(self.run_dir) do
      if name:sub(1, #DIR_PREFIX) == DIR_PREFIX then dirs[#dirs + 1] = name end
   end
   table.sort(dirs)
   return dirs
end

-- What to spawn (engine.command): COMMAND (found at PATH) with its stderr into the FIFO (the shell
-- opens it, then execs it: same pid), and the stand-in first on PATH, which reads its settings
-- from RUN_DIR (STATE: the engine's; STATE.inner: the named engine's).
function Suite:command(state, command, path, run_dir)
   self.run_dir = run_dir
   local bin, fifo = run_dir .. "/bin", run_dir .. "/" .. FIFO
   assert(lfs.mkdir(bin))
   stat.chmod(bin, tonumber("755", 8))
   local inner = state.inner
   local boot = engines.with_jit(inner.jit, engines.lua_init(true)) or ""
   write_file(run_dir .. "/" .. CONFIG, cjson.encode({
      engine = state.engine, tracker = state.library,
      vglib = (state.library:gsub("libljleak%.so$", "libljleak_vg.so")),
      valgrind = inner.valgrind, valgrind_extra = inner.extra,
      boot = boot, fifo = fifo}), tonumber("644", 8))
   local luajit = unistd.readlink("/proc/self/exe") or "/usr/bin/luajit"
   write_file(bin .. "/valgrind", STANDIN:format(luajit, package.path, package.cpath, run_dir), tonumber("755", 8))
   assert(stat.mkfifo(fifo, tonumber("600", 8)))
   self.fd = assert(fcntl.open(fifo, bit.bor(fcntl.O_RDONLY, fcntl.O_NONBLOCK)))
   fcntl.fcntl(self.fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)

   local env = engines.with_user_env({})
   env.PATH = bin .. ":" .. (os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin")
   env.TEST_NGINX_USE_VALGRIND = M.USE_VALGRIND
   local argv = {"/bin/sh", "-c", 'exec 2>"$0" && exec "$@"', fifo, path}
   for k = 2, #command do argv[#argv + 1] = command[k] end
   return "/bin/sh", argv, env
end

-- After the command ended: the nginx processes still running (workers finishing), each engine's
-- way, within one deadline; then what is left in the FIFO. Returns a signal that came meanwhile.
function Suite:after(state, interrupted)
   self:pump()
   local late_signal
   local deadline = process.now() + (interrupted and 1 or 10)
   local inner = engines.get(state.engine)
   for _, name in ipairs(self:dirs()) do
      local left = math.max(0, deadline - process.now())
      late_signal = inner.after(state.inner, self.run_dir .. "/" .. name, interrupted, left) or late_signal
   end
   local until_eof = process.now() + 2
   while not self:pump() and process.now() < until_eof do
      ptime.nanosleep({tv_sec = 0, tv_nsec = 20000000})
   end
   if self.line ~= "" then self:text("\n") end
   unistd.close(self.fd)
   self.fd = nil
   return late_signal
end

-- -- Naming the records ------------------------------------------------------------------------

-- The block whose configuration has HASH: EV's own, else the first after it in the same file (a
-- HUP reload), else the last before it.
function Suite:event_of_hash(hash, ev)
   if not ev then return nil end
   if ev.hash == hash then return ev end
   local before
   for _, e in ipairs(self.events) do
      if e.hash == hash and e.path == ev.path then
         if e.index > ev.index then return e end
         before = e
      end
   end
   return before
end

-- Lua frames of a block's handler, with the .t file's line each came from where it is known:
-- `content_by_lua(nginx.conf:42)` line 3 is line 44 of nginx.conf; a file of `--- user_files`
-- (`*_by_lua_file`) is a part of the block too.
local function map_frames(frames, ev)
   if not (frames and ev and ev.block) then return frames end
   if ev.map == nil then
      ev.map = ev.text and testbase.conf_map(ev.block, testbase.lines(ev.text)) or false
   end
   local conf_name = basename(ev.conf)
   local out = {}
   for i, f in ipairs(frames) do
      local copy = {}
      for k, v in pairs(f) do copy[k] = v end
      local src = f.source or ""
      local name, at = src:match("^[%w_]+%((.-):(%d+)%)$")
      local t_line
      if name and name == conf_name and f.line and ev.map then
         t_line = ev.map(tonumber(at) + f.line - 1)
      elseif f.line and ev.block.files[basename(src)] then
         t_line = ev.block.files[basename(src)] + f.line - 1
      end
      if t_line then copy.test_file, copy.test_line = ev.file, t_line end
      out[i] = copy
   end
   return out
end

-- Give a process PROC (either engine's, reported in the directory of block EV) its records' blocks:
-- a site tagged with a configuration's hash belongs to that configuration's block, any other to EV.
function Suite:name_proc(proc, ev)
   local max_ctx, max_lua = 0, 0
   for id in pairs(proc.ctx) do max_ctx = math.max(max_ctx, id) end
   for id in pairs(proc.lua) do max_lua = math.max(max_lua, id) end
   local ev_of_ctx, mapped = {}, {}
   for id, c in pairs(proc.ctx) do
      local hash = c.tag and c.tag:sub(1, #nginx.TAG) == nginx.TAG and c.tag:sub(#nginx.TAG + 1)
      if hash then
         local e = self:event_of_hash(hash, ev) or ev
         ev_of_ctx[id] = e
         c.tag = e and e.test
      end
   end
   local default_ctx
   for _, site in pairs(proc.sites) do
      local e = ev
      if site.ctx then
         e = ev_of_ctx[site.ctx] or ev
      elseif ev then
         if not default_ctx then
            max_ctx = max_ctx + 1
            default_ctx = max_ctx
            proc.ctx[default_ctx] = {epoch = 0, tag = ev.test}
         end
         site.ctx = default_ctx
      end
      if site.lua and proc.lua[site.lua] and e then
         local key = site.lua .. " " .. e.index
         if not mapped[key] then
            max_lua = max_lua + 1
            mapped[key] = max_lua
            proc.lua[max_lua] = map_frames(proc.lua[site.lua], e)
         end
         site.lua = mapped[key]
      end
   end
end

-- A record's identity, to find the same leak in a parent's and a child's reports: kind, frames
-- (the tracker's: object and offset; Valgrind's: function, object, address) and Lua frames.
local function record_key(proc, leak)
   local site = proc.sites[leak.site]
   if not site then return nil end
   local parts = {leak.kind}
   for _, f in ipairs(site.frames) do
      local m = f.module and proc.modules[f.module]
      parts[#parts + 1] = m and (m.path .. "+" .. f.offset)
         or ("%s %s %s"):format(f["function"] or "", f.object or "", tostring(f.address or f.offset or ""))
   end
   for _, lf in ipairs(site.lua and proc.lua[site.lua] or {}) do
      parts[#parts + 1] = ("%s:%s"):format(lf.source, lf.line or "")
   end
   return table.concat(parts, " ")
end

-- A block that a master lost before it forked its workers is lost in each of them too (they have
-- a copy of its memory): it is counted once, in the master. PROCS: the processes of one nginx.
local function count_forked_once(procs, key)
   local by_pid = {}
   for _, proc in ipairs(procs) do
      if proc.pid then by_pid[proc.pid] = proc end
   end
   for _, proc in ipairs(procs) do
      local parent = proc.ppid and by_pid[proc.ppid]
      if parent and parent ~= proc then
         local lost = {}
         for _, leak in ipairs(parent.leaks) do
            local k = key(parent, leak)
            if k then
               local l = lost[k] or {blocks = 0, bytes = 0}
               l.blocks, l.bytes = l.blocks + leak.blocks, l.bytes + leak.bytes
               lost[k] = l
            end
         end
         local kept = {}
         for _, leak in ipairs(proc.leaks) do
            local l = lost[key(proc, leak) or false]
            if l then
               local blocks, bytes = math.min(l.blocks, leak.blocks), math.min(l.bytes, leak.bytes)
               l.blocks, l.bytes = l.blocks - blocks, l.bytes - bytes
               leak.blocks, leak.bytes = leak.blocks - blocks, leak.bytes - bytes
            end
            if leak.blocks > 0 then kept[#kept + 1] = leak end
         end
         proc.leaks = kept
      end
   end
end

-- The reports of every nginx (the engine's collect): each directory's, named by block. VG: the
-- Valgrind engine's.
function Suite:collect(vg)
   local procs, problems, errors, unchecked = {}, {}, {}, {}
   for _, name in ipairs(self:dirs()) do
      local dir, ev = self.run_dir .. "/" .. name, self.by_dir[name]
      local p, pr, er, un
      if vg then
         p, pr = vgxml.collect(dir)
         er, un = {}, {}
      else
         p, pr, er, un = tracker.collect_dir(dir)
      end
      count_forked_once(p, record_key)
      for _, proc in ipairs(p) do
         self:name_proc(proc, ev)
         for _, e in ipairs(proc.errors or {}) do e.test = e.test or (ev and ev.test) end
      end
      for _, e in ipairs(er) do e.test = e.test or (ev and ev.test) end
      if ev then   -- which block's nginx it was
         for _, u in ipairs(un) do u.reason = ("%s, in the nginx of %s"):format(u.reason, ev.test) end
         for _, x in ipairs(pr) do x.message = ("%s (the nginx of %s)"):format(x.message, ev.test) end
      end
      for _, x in ipairs(p) do procs[#procs + 1] = x end
      for _, x in ipairs(pr) do problems[#problems + 1] = x end
      for _, x in ipairs(er) do errors[#errors + 1] = x end
      for _, x in ipairs(un) do unchecked[#unchecked + 1] = x end
   end
   table.sort(procs, function(a, b) return (a.pid or 0) < (b.pid or 0) end)
   return procs, problems, errors, unchecked
end

-- The tests the suite ran (the report's `tests`): every block an nginx ran for (started, or
-- reloaded to), in order; `name` is its records' `test`, and JUnit's case is `class` (the .t file as
-- prove named it) and `case` (the block's name).
function Suite:tests()
   local tests, seen = {}, {}
   for _, ev in ipairs(self.events) do
      if ev.name and ev.file and not seen[ev.test] then
         seen[ev.test] = true
         tests[#tests + 1] = {name = ev.test, file = ev.file, line = ev.block and ev.block.line, class = ev.file,
                              case = ev.name}
      end
   end
   return tests
end

-- -- The engine ---------------------------------------------------------------------------------

-- Valgrind options that Test::Nginx users put in TEST_NGINX_USE_VALGRIND and that ljleak sets
-- itself (or supersedes): dropped.
local SUPERSEDED = {["-q"] = true, ["--tool"] = true, ["--leak-check"] = true, ["--show-leak-kinds"] = true,
                    ["--keep-debuginfo"] = true, ["--show-possibly-lost"] = true, ["--show-reachable"] = true,
                    ["--gen-suppressions"] = true, ["--trace-children"] = true}

-- The settings of a test-nginx run, before anything runs: refused Test::Nginx settings (a usage
-- error), the user's own TEST_NGINX_USE_VALGRIND (its Valgrind options, under --engine=valgrind)
-- and valgrind.suppress taken into ARGS.
local function take_settings(args)
   for _, var in ipairs({"TEST_NGINX_CHECK_LEAK", "TEST_NGINX_BENCHMARK"}) do
      local v = os.getenv(var)
      if v and v ~= "" and v ~= "0" then
         util.fail("usage", "test-nginx: %s=%s: Test::Nginx then ignores TEST_NGINX_USE_VALGRIND, through which "
            .. "ljleak reaches nginx; unset it", var, v)
      end
   end
   local user = os.getenv("TEST_NGINX_USE_VALGRIND")
   if user and user:match("%S") and not user:match("^%s*%d+%s*$") and args.engine == "valgrind" then
      local words = {}
      for w in user:gmatch("%S+") do
         if not SUPERSEDED[w:match("^(%-%-?[^=]+)") or w] then words[#words + 1] = w end
      end
      local _, err = valgrind.parse_extra({table.concat(words, " ")})
      if err then
         util.fail("usage", "test-nginx: TEST_NGINX_USE_VALGRIND: %s", (err:gsub("^%-%-valgrind%-opts: ", "")))
      end
      args.valgrind_opts = args.valgrind_opts or {}
      table.insert(args.valgrind_opts, 1, table.concat(words, " "))
   end
   if lfs.attributes("valgrind.suppress", "mode") == "file" then
      args.suppressions = args.suppressions or {}
      table.insert(args.suppressions, "valgrind.suppress")
   end
end

-- The engine of `ljleak test-nginx` (ljleak.engine's interface, and its optional interval, tests
-- and nothing): the engine NAME, reached through the stand-in; prove itself runs without it.
function M.engine(name)
   local inner = engines.get(name)
   local E = {name = inner.name, interval = 0.02,
              nothing = "no nginx was started (Test::Nginx starts it through TEST_NGINX_USE_VALGRIND: see "
                 .. "`ljleak test-nginx --help`)"}
   function E.prepare(args)
      take_settings(args)
      return {engine = name, inner = inner.prepare(args), suite = new_suite()}
   end
   function E.check() end
   function E.command(state, command, path, run_dir)
      state.inner.library = state.library
      return state.suite:command(state, command, path, run_dir)
   end
   function E.ticker(state) return function() state.suite:pump() end end
   function E.after(state, _, interrupted) return state.suite:after(state, interrupted) end
   function E.collect(state) return state.suite:collect(name == "valgrind") end
   function E.depth(state) return inner.depth(state.inner) end
   E.builtin_suppressions = inner.builtin_suppressions
   function E.tests(state) return state.suite:tests() end
   return E
end

return M
