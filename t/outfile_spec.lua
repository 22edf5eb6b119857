-- busted spec for where ljleak writes its reports (lua/ljleak/outfile.lua): `-`, FIFOs, character
-- devices and /dev/stdout as streams; links followed; a file replaced only if ljleak wrote it, judged
-- before the run and again before the rename; no guessable temporary name; valid UTF-8.
-- Run from the checkout: luajit /usr/bin/busted t/outfile_spec.lua
local cjson = require "cjson"
local lxp = require "lxp"
local psignal = require "posix.signal"
local stat = require "posix.sys.stat"
local ptime = require "posix.time"
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"
local h = require "t.helper"

-- A program that leaks one block of 100 bytes at line 1 of its command line.
local LEAK = 'local ffi = require "ffi" ffi.cdef "void *malloc(size_t)" ffi.C.malloc(100)'

local dir

before_each(function() dir = h.tmpdir() end)
after_each(function() h.rmtree(dir) end)

local function ljleak(args, opts)
   local argv = {h.BIN}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   return h.run(argv, opts)
end

-- `ljleak run OPTIONS -- luajit -e LEAK`.
local function run_leak(options, opts)
   local args = {"run"}
   for _, o in ipairs(options) do args[#args + 1] = o end
   for _, a in ipairs({"--", "luajit", "-e", LEAK}) do args[#args + 1] = a end
   return ljleak(args, opts)
end

-- TEXT is the JSON report of run_leak: one definite block of 100 bytes from malloc, at line 1.
local function assert_leak_report(text)
   local data = cjson.decode(text)
   assert.are.same({blocks = 1, bytes = 100}, data.summary.definite)
   local rec = h.one(data, "definite", "malloc")
   assert.are.equal("malloc", rec.frames[1]["function"])
   assert.are.equal(1, rec.lua[1].line)
end

local function assert_one_line(err)
   assert.are.equal(1, select(2, err:gsub("\n", "")), "want one line, got: " .. err)
end

local function mode_of(path)
   local st = stat.lstat(path)
   return st and st.st_mode
end

local function is_link(path) return stat.S_ISLNK(mode_of(path) or 0) ~= 0 end

-- Is S well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF)?
local function is_utf8(s)
   local i = 1
   while i <= #s do
      local c, lo, hi = s:byte(i), 0x80, 0xBF
      local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
         or (c >= 0xF0 and c <= 0xF4) and 4
      if not len then return false end
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F elseif c == 0xF0 then lo = 0x90
      elseif c == 0xF4 then hi = 0x8F end
      for k = 1, len - 1 do
         local d = s:byte(i + k)
         if not d or d < (k == 1 and lo or 0x80) or d > (k == 1 and hi or 0xBF) then return false end
      end
      i = i + len
   end
   return true
end

local function symlink(target, path)
   assert.are.equal(0, unistd.link(target, path, true))
end

describe("report files", function()
   it("go to standard output for `-`", function()
      local code, out, err = run_leak({"--json=-"}, {cwd = dir})
      assert.are.equal(42, code, err)
      assert_leak_report(out)
      assert.is_nil(mode_of(dir .. "/-"))
   end)

   it("go to /dev/stdout as a stream, and leave the link alone", function()
      local code, out = run_leak({"--json=/dev/stdout"})
      assert.are.equal(42, code)
      assert_leak_report(out)
      assert.is_true(is_link("/dev/stdout"))
   end)

   it("go to a FIFO that a reader process reads, which stays a FIFO", function()
      local fifo, got = dir .. "/fifo", dir .. "/got.json"
      assert(stat.mkfifo(fifo, 384))
      -- The reader: a LuaJIT process (under `make test`'s self-check it is traced too: it must
      -- not leak), which copies what it reads from the FIFO to GOT.
      local script = dir .. "/reader.lua"
      h.write_file(script, "local i = io.open(arg[1], 'rb') local data = i:read('*a') i:close()\n"
         .. "local o = io.open(arg[2], 'wb') o:write(data) o:close()\n")
      local reader = assert(unistd.fork())
      if reader == 0 then
         unistd.execp("luajit", {[0] = "luajit", script, fifo, got})
         unistd._exit(127)
      end
      local code = run_leak({"--json=" .. fifo})
      -- The reader gets EOF when ljleak closes the FIFO; if ljleak never opened it, it waits forever.
      local done
      for _ = 1, 50 do
         done = wait.wait(reader, wait.WNOHANG)
         if done ~= 0 then break end
         ptime.nanosleep({tv_sec = 0, tv_nsec = 100000000})
      end
      if done == 0 then
         psignal.kill(reader, psignal.SIGKILL)
         wait.wait(reader)
      end
      assert.are.equal(42, code)
      assert.are_not.equal(0, done, "the reader never got EOF")
      assert_leak_report(h.read_file(got))
      assert.are_not.equal(0, stat.S_ISFIFO(mode_of(fifo)))
   end)

   it("go to /dev/null, which stays a character device", function()
      local before = stat.stat("/dev/null")
      local code = run_leak({"--json=/dev/null", "--html=" .. dir .. "/r.html"})
      assert.are.equal(42, code)
      local after = stat.lstat("/dev/null")
      assert.are_not.equal(0, stat.S_ISCHR(after.st_mode))
      assert.are.same({before.st_ino, before.st_rdev}, {after.st_ino, after.st_rdev})
   end)

   it("follow a link to an earlier report: its target is replaced, the link stays", function()
      local target, link = dir .. "/old.json", dir .. "/link.json"
      assert.are.equal(0, (ljleak({"run", "--json=" .. target, "--", "true"})))
      symlink(target, link)
      local code = run_leak({"--json=" .. link})
      assert.are.equal(42, code)
      assert.is_true(is_link(link))
      assert_leak_report(h.read_file(target))
   end)

   it("refuse a link to a user's file before the run, naming the target, and leave it alone", function()
      local notes, link, marker = dir .. "/notes.txt", dir .. "/link.json", dir .. "/ran"
      h.write_file(notes, "my notes\n")
      symlink("notes.txt", link)
      local code, _, err = ljleak({"run", "--json=" .. link, "--", "touch", marker})
      assert.are.equal(2, code)
      assert_one_line(err)
      assert.matches("--json=" .. link .. ": its target " .. notes .. ": file exists and is not an ljleak report",
                     err, 1, true)
      assert.are.equal("my notes\n", h.read_file(notes))
      assert.is_true(is_link(link))
      assert.is_nil(mode_of(marker))
   end)

   it("never follow a link planted at a temporary name", function()
      -- The old temporary name was FILE.tmp.<pid>: plant links for the next pids to a victim.
      local victim, json = dir .. "/victim", dir .. "/report.json"
      h.write_file(victim, "precious\n")
      local last = tonumber(h.read_file("/proc/sys/kernel/ns_last_pid"))
      for pid = last + 1, last + 400 do
         symlink("victim", ("%s.tmp.%d"):format(json, pid))
      end
      local code = run_leak({"--json=" .. json})
      assert.are.equal(42, code)
      assert.are.equal("precious\n", h.read_file(victim))
      assert_leak_report(h.read_file(json))
   end)

   it("do not replace a file the program wrote during the run: exit 2, the report kept beside it", function()
      local json = dir .. "/report.json"
      local program = ('io.open(%q, "w"):write("mine\\n") '):format(json) .. LEAK
      local code, _, err = ljleak({"run", "--json=" .. json, "--", "luajit", "-e", program})
      assert.are.equal(2, code)
      assert.are.equal("mine\n", h.read_file(json))
      local kept = err:match("%-%-json=" .. json:gsub("%p", "%%%0")
         .. ": changed during the run: file exists and is not an ljleak report; not overwriting it; "
         .. "the report is in (%S+)\n")
      assert.is_string(kept, err)
      assert_leak_report(h.read_file(kept))
   end)

   it("refuse two outputs naming one file, also through a link or as `-` and /dev/stdout", function()
      local json, link, marker = dir .. "/r.json", dir .. "/link", dir .. "/ran"
      symlink("r.json", link)
      for _, pair in ipairs({{"--json=" .. json, "--html=" .. json}, {"--json=" .. json, "--folded=" .. link},
                             {"--json=-", "--junit=/dev/stdout"}}) do
         local code, _, err = ljleak({"run", pair[1], pair[2], "--", "touch", marker})
         assert.are.equal(2, code)
         assert_one_line(err)
         assert.matches(pair[2] .. ": the same file as " .. pair[1], err, 1, true)
      end
      assert.is_nil(mode_of(marker))
      assert.is_nil(mode_of(json))
   end)

   it("give `suppressions merge -o` the same rules: a user's file is refused, its own output replaced", function()
      local supp, out = dir .. "/a.supp", dir .. "/out.supp"
      h.write_file(supp, "{\n   x\n   Memcheck:Leak\n   fun:malloc\n}\n")
      h.write_file(out, "my own file\n")
      local code, _, err = ljleak({"suppressions", "merge", supp, "-o", out})
      assert.are.equal(2, code)
      assert_one_line(err)
      assert.matches("--output=" .. out .. ": file exists and is not a suppression file written by ljleak", err, 1,
                     true)
      assert.are.equal("my own file\n", h.read_file(out))
      os.remove(out)
      assert.are.equal(0, (ljleak({"suppressions", "merge", supp, "-o", out})))
      assert.are.equal(0, (ljleak({"suppressions", "merge", supp, supp, "-o", out})))
      assert.matches("^# Merged by ljleak from .*: 1 entries %(1 duplicates dropped%)", h.read_file(out))
   end)

   it("are valid UTF-8 whatever bytes file and function names hold", function()
      -- A Lua file whose name and function name hold bytes that are not UTF-8 (LuaJIT takes any
      -- byte above 127 in a name).
      local script = dir .. "/l\233ak.lua"
      h.write_file(script, 'local ffi = require "ffi"\nffi.cdef "void *malloc(size_t)"\n'
         .. "local function f\233\255() ffi.C.malloc(100) end\nf\233\255()\n")
      local json, junit, html = dir .. "/r.json", dir .. "/r.xml", dir .. "/r.html"
      local code, _, err = ljleak({"run", "--json=" .. json, "--junit=" .. junit, "--html=" .. html, "--",
                                  "luajit", script})
      assert.are.equal(42, code, err)
      for _, file in ipairs({json, junit, html}) do
         assert.is_true(is_utf8(h.read_file(file)), file .. " is not UTF-8")
      end
      local data = cjson.decode(h.read_file(json))
      local rec = h.one(data, "definite", "malloc")
      assert.are.same({blocks = 1, bytes = 100}, {blocks = rec.blocks, bytes = rec.bytes})
      -- Each stray byte is the character of its number: \u00e9, \u00ff.
      assert.are.same({source = dir .. "/l\195\169ak.lua", line = 3, ["function"] = "f\195\169\195\191"},
                      rec.lua[1])
      local parser = lxp.new({})
      local ok, perr = parser:parse(h.read_file(junit))
      parser:close()
      assert.is_truthy(ok, perr)
   end)
end)
