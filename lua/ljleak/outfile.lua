-- Output files (--json, --junit, --html, --folded, --gen-suppressions, `suppressions merge -o`):
-- one set of rules for where ljleak may write, judged before the program runs and again at the end.
--
-- `-` is standard output. A FIFO, a character device or /proc/self/fd/N (so /dev/stdout,
-- /dev/fd/N) is opened and written as a stream. A symbolic link is followed and its target
-- judged by these rules. A regular file is replaced atomically (a new file made with mkstemp
-- beside it, O_CREAT|O_EXCL, renamed over it) only if it is empty or was written by ljleak in
-- that format (the caller's `owns`), judged again just before the rename; a file that did not
-- exist is created the same way. Anything else is refused, and so are two outputs naming one file.
local bit = require "bit"
local ffi = require "ffi"
local errno = require "posix.errno"
local fcntl = require "posix.fcntl"
local psignal = require "posix.signal"
local stat = require "posix.sys.stat"
local stdlib = require "posix.stdlib"
local unistd = require "posix.unistd"

local M = {}

-- How much of an existing file its `owns` sees.
M.HEAD = 65536

local MAX_LINKS = 40

-- -- Judging a path --------------------------------------------------------------------------

local function components(path)
   local list = {}
   for c in path:gmatch("[^/]+") do list[#list + 1] = c end
   return list
end

-- Is DIR (a path without links) a process's fd folder: /proc/PID/fd or /proc/PID/task/TID/fd?
-- Returns the pid.
local function fd_folder_pid(dir)
   return tonumber(dir:match("^/proc/(%d+)/fd$") or dir:match("^/proc/(%d+)/task/%d+/fd$") or "")
end

-- Follow PATH's symbolic links one component at a time. Returns {path = the path without
-- links, linked = true if a link was followed, fd = N for /proc/self/fd/N, proc_fd = true for
-- another process's /proc/PID/fd/N}, or nil and why not.
local function resolve(path)
   local pending = components(path)
   local cur = ""   -- the path so far, without links; "" is the root
   if path:sub(1, 1) ~= "/" then
      local cwd, err = unistd.getcwd()
      if not cwd then return nil, "cannot find the current folder: " .. tostring(err) end
      cur = cwd == "/" and "" or cwd
   end
   local i, links = 1, 0
   while i <= #pending do
      local c = pending[i]
      local last = i == #pending
      i = i + 1
      if c == ".." then
         cur = cur:match("^(.*)/[^/]*$") or ""
      elseif c ~= "." then
         local p = cur .. "/" .. c
         local pid = fd_folder_pid(cur)
         if pid and last and c:match("^%d+$") then   -- a magic link to an open file: not followed
            return {path = p, linked = links > 0, fd = pid == unistd.getpid() and tonumber(c) or nil,
                    proc_fd = pid ~= unistd.getpid()}
         end
         local st, err, code = stat.lstat(p)
         if not st then
            if code ~= errno.ENOENT then return nil, tostring(err) end
            if not last then return nil, ("folder '%s' does not exist"):format(p) end
            return {path = p, linked = links > 0}
         end
         if stat.S_ISLNK(st.st_mode) ~= 0 then
            links = links + 1
            local target = links <= MAX_LINKS and unistd.readlink(p)
            if not target then return nil, ("%s: too many symbolic links, or one that cannot be read"):format(p) end
            if target:sub(1, 1) == "/" then cur = "" end
            local rest = components(target)
            for j = i, #pending do rest[#rest + 1] = pending[j] end
            pending, i = rest, 1
         elseif not last and stat.S_ISDIR(st.st_mode) == 0 then
            return nil, ("'%s' is not a folder"):format(p)
         else
            cur = p
         end
      end
   end
   return {path = cur == "" and "/" or cur, linked = links > 0}
end

-- Open PATH for reading without blocking on a FIFO; returns the fd or nil.
local function open_read(path)
   return fcntl.open(path, fcntl.O_RDONLY + fcntl.O_NONBLOCK + fcntl.O_NOCTTY)
end

-- The first M.HEAD bytes of the regular file at PATH and whether that is all of it; nil if it
-- cannot be read (or is no longer a regular file).
local function read_head(path)
   local fd = open_read(path)
   if not fd then return nil end
   local st = stat.stat("/proc/self/fd/" .. fd)
   local head = st and stat.S_ISREG(st.st_mode) ~= 0 and unistd.read(fd, M.HEAD)
   unistd.close(fd)
   if not head then return nil end
   return head, st.st_size <= #head
end

-- Judge SPEC's path ({option, path, owns, what}). Returns the target or nil and why not.
-- A target: {spec, kind = "fd" (fd), "stream" (path) or "file" (path, exists, mode), id = what
-- identifies the file it writes (device and inode, or path), shown = the file's path if a link
-- was followed to it}.
local function judge(spec)
   local path = spec.path
   if path == "" then return nil, "empty file name" end
   if path == "-" then path = "/proc/self/fd/1" end
   local r, err = resolve(path)
   if not r then return nil, err end
   local t = {spec = spec, path = r.path, shown = r.linked and r.path or nil}
   local st = stat.stat(r.path)
   if r.fd or r.proc_fd then
      if not st then return nil, ("%s is not an open file descriptor"):format(r.path) end
      if stat.S_ISDIR(st.st_mode) ~= 0 then return nil, ("%s is a directory"):format(r.path) end
      if r.fd then
         local flags = fcntl.fcntl(r.fd, fcntl.F_GETFL)
         local access = flags and flags % 4   -- O_ACCMODE
         if access ~= fcntl.O_WRONLY and access ~= fcntl.O_RDWR then
            return nil, ("file descriptor %d is not open for writing"):format(r.fd)
         end
         t.kind, t.fd = "fd", r.fd
      else
         t.kind = "stream"
      end
   elseif not st then
      t.kind, t.exists = "file", false
   elseif stat.S_ISFIFO(st.st_mode) ~= 0 or stat.S_ISCHR(st.st_mode) ~= 0 then
      t.kind = "stream"
   elseif stat.S_ISREG(st.st_mode) ~= 0 then
      t.kind, t.exists, t.mode = "file", true, st.st_mode % 4096
      if st.st_size > 0 then
         local head, complete = read_head(r.path)
         if not head then return nil, ("%s cannot be read"):format(r.path) end
         if not (spec.owns and spec.owns(head, complete)) then
            return nil, ("%sfile exists and is not %s; not overwriting it"):format(
               t.shown and ("its target %s: "):format(t.shown) or "", spec.what or "an ljleak report")
         end
      end
   elseif stat.S_ISDIR(st.st_mode) ~= 0 then
      return nil, "is a directory" .. (t.shown and " (" .. t.shown .. ")" or "")
   else
      return nil, ("is a %s, not a file, FIFO or character device"):format(
         stat.S_ISSOCK(st.st_mode) ~= 0 and "socket" or "block device")
   end
   t.id = st and ("%d:%d"):format(st.st_dev, st.st_ino) or t.path
   return t
end

local function refuse(spec, why)
   return nil, ("%s=%s: %s"):format(spec.option, spec.path, why)
end

-- Can the target be written? A new file is tried (and removed) beside a file target.
local function probe(t)
   if t.kind == "file" then
      local fd, tmp = stdlib.mkstemp(t.path .. ".tmp.XXXXXX")
      if not fd then return nil, ("cannot write there (%s)"):format(tostring(tmp)) end
      unistd.close(fd)
      os.remove(tmp)
   elseif t.kind == "stream" and unistd.access(t.path, "w") ~= 0 then
      return nil, ("%s is not writable"):format(t.path)
   end
   return true
end

-- Judge each of SPECS ({option = "--json", path = FILE, owns = function(head, complete) -> is
-- it ljleak's, what = "an ljleak report"}) before anything runs. Returns the targets, in order,
-- or nil and one line naming the option, the file and why it is refused.
function M.check(specs)
   local targets, by_id = {}, {}
   for i, spec in ipairs(specs) do
      local t, err = judge(spec)
      if not t then return refuse(spec, err) end
      local ok, perr = probe(t)
      if not ok then return refuse(spec, perr) end
      local other = by_id[t.id]
      if other then
         return refuse(spec, ("the same file as %s=%s; give each output its own file"):format(
            other.option, other.path))
      end
      by_id[t.id] = spec
      targets[i] = t
   end
   return targets
end

-- Does target T write to ljleak's standard output?
function M.is_stdout(t)
   if t.kind ~= "fd" then return false end
   local a, b = stat.stat("/proc/self/fd/" .. t.fd), stat.stat("/proc/self/fd/1")
   return a ~= nil and b ~= nil and a.st_dev == b.st_dev and a.st_ino == b.st_ino
end

-- -- Writing -----------------------------------------------------------------------------------

-- write(2) straight from a string buffer: no string of each chunk is made (for a big report,
-- making them was a third of the time).
pcall(ffi.cdef, "ssize_t write(int fd, const void *buf, size_t count);")
local C_write = ffi.C.write

-- A function(chunk) writing strings or string buffers to FD; raises {write_error = message}.
local function fd_writer(fd)
   return function(chunk)
      local ptr, len
      if type(chunk) == "string" then
         ptr, len = ffi.cast("const char *", chunk), #chunk
      else
         ptr, len = chunk:ref()
      end
      local done = 0
      while done < len do
         local n = tonumber(C_write(fd, ptr + done, len - done))
         if n >= 0 then
            done = done + n
         else
            local code = ffi.errno()
            if code ~= errno.EINTR and code ~= errno.EAGAIN then
               error({write_error = (errno.errno(code))}, 0)
            end
         end
      end
   end
end

-- Run PRODUCE(write) with writes going to FD; SIGPIPE ignored meanwhile (a reader that went away
-- is an error, not ljleak's death). Returns true or nil, message.
local function produce_to(fd, produce)
   local old = psignal.signal(psignal.SIGPIPE, psignal.SIG_IGN)
   local ok, err = pcall(produce, fd_writer(fd))
   psignal.signal(psignal.SIGPIPE, old == psignal.SIG_IGN and psignal.SIG_IGN or psignal.SIG_DFL)
   if ok then return true end
   if type(err) == "table" and err.write_error then return nil, err.write_error end
   error(err, 0)
end

local function write_stream(t, produce)
   local spec = t.spec
   local fd, err
   if t.kind == "fd" then
      io.stdout:flush()
      fd, err = unistd.dup(t.fd)
   else
      fd, err = fcntl.open(t.path, fcntl.O_WRONLY + fcntl.O_NOCTTY)
   end
   if not fd then return refuse(spec, ("cannot open it: %s"):format(tostring(err))) end
   local st = stat.stat("/proc/self/fd/" .. fd)
   if t.kind == "stream" and not (st and (stat.S_ISFIFO(st.st_mode) ~= 0 or stat.S_ISCHR(st.st_mode) ~= 0)) then
      unistd.close(fd)
      return refuse(spec, "is no longer a FIFO or character device; not writing to it")
   end
   local ok, werr = produce_to(fd, produce)
   unistd.close(fd)
   if not ok then return refuse(spec, werr) end
   return true
end

local function default_mode()
   local mask = stat.umask(0)
   stat.umask(mask)
   return bit.band(438, bit.bnot(mask))   -- 0666
end

local function write_file(t, produce)
   local spec = t.spec
   local fd, tmp = stdlib.mkstemp(t.path .. ".tmp.XXXXXX")
   if not fd then return refuse(spec, ("cannot write there (%s)"):format(tostring(tmp))) end
   local ok, written, werr = pcall(produce_to, fd, produce)
   local closed, cerr = unistd.close(fd)
   if not ok then
      os.remove(tmp)
      error(written, 0)
   end
   if not written or not closed then
      os.remove(tmp)
      return refuse(spec, ("%s: %s"):format(tmp, tostring(werr or cerr)))
   end
   -- Judged again: the program may have made a file there, or changed the one there.
   local now, why = judge(spec)
   if now and not (now.kind == "file" and now.path == t.path) then
      now, why = nil, "it is no longer the file it was"
   end
   if not now then
      return refuse(spec, ("changed during the run: %s; the report is in %s"):format(why, tmp))
   end
   stat.chmod(tmp, now.mode or default_mode())
   local rok, rerr = os.rename(tmp, t.path)
   if not rok then
      os.remove(tmp)
      return refuse(spec, tostring(rerr))
   end
   return true
end

-- Write target T (from M.check): PRODUCE(write) calls write(chunk) with strings or string
-- buffers. Returns true, or nil and one line (a refused file's report is kept beside it).
function M.write(t, produce)
   if t.kind == "file" then return write_file(t, produce) end
   return write_stream(t, produce)
end

return M
