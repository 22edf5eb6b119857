-- The Valgrind engine: its XML reader (on saved samples), the command it builds, and
-- `ljleak run --engine=valgrind` end to end beyond what the leak fixtures' headers say (those:
-- t/engines_spec.lua): Lua frames, memory errors, a process killed mid-report, bad report files,
-- unique file names; then the default suppressions on clean programs under both engines,
-- and suppressions generated from a run and applied to it again. The slow runs go in parallel.
local cjson = require "cjson"

local h = require "t.helper"
local supp = require "ljleak.supp"
local engines = require "ljleak.engine"
local valgrind = require "ljleak.engine.valgrind"
local vgxml = require "ljleak.vgxml"

local function sample(name)
   return assert(h.read_file(h.ROOT .. "/t/valgrind/" .. name))
end

-- Leak record I of a process read from XML (ljleak.raw's proc shape), as one table.
local function leak(proc, i)
   local l = proc.leaks[i]
   local site = proc.sites[l.site]
   local ctx = site.ctx and proc.ctx[site.ctx]
   return {kind = l.kind, blocks = l.blocks, bytes = l.bytes, frames = site.frames, test = ctx and ctx.tag}
end

local function functions(frames)
   local t = {}
   for i, f in ipairs(frames or {}) do t[i] = f["function"] or f.object or f.address end
   return t
end

describe("Valgrind XML reader", function()
   it("reads leak records, counting only a definite record's own (direct) bytes", function()
      local proc = assert(vgxml.parse(sample("chain.xml"), "run/vg.8734.xml"))
      assert.are.equal(8734, proc.pid)
      assert.are.equal(8731, proc.ppid)
      assert.are.equal(4, proc.protocol)
      assert.are.same({"luajit", "t/leak/chain.lua"}, proc.command)
      assert.is_nil(proc.truncated)
      assert.are.equal(3, #proc.leaks)
      local ind, def, reach = leak(proc, 1), leak(proc, 2), leak(proc, 3)
      assert.are.same({"indirect", 1, 48}, {ind.kind, ind.blocks, ind.bytes})
      -- "1,080 (1,032 direct, 48 indirect) bytes": the 48 are the indirect record's already
      assert.are.same({"definite", 3, 1032}, {def.kind, def.blocks, def.bytes})
      assert.are.same({"reachable", 1, 555}, {reach.kind, reach.blocks, reach.bytes})
      assert.are.same({["function"] = "leak_chain", file = "libleaky.c", dir = "/work/main/t/leak", line = 92,
                       object = "/work/main/build/t/leak/libleaky.so"}, ind.frames[2])
      assert.are.same({object = "/usr/bin/luajit", address = "0x115c65"}, ind.frames[3])
      assert.are.same({address = "0x4f71f8d"}, def.frames[3])   -- JIT code: no object, no function
      assert.are.same({{name = "dtv-addr-init", count = 2}}, proc.suppcounts)
   end)

   it("reads memcheck's other errors with their counts, other stacks and suppression kinds", function()
      local proc = assert(vgxml.parse(sample("errors.xml"), "vg.4242.xml"))
      assert.are.equal(0, #proc.leaks)
      assert.are.equal(3, #proc.errors)
      local read, param, free = proc.errors[1], proc.errors[2], proc.errors[3]
      assert.are.same({"InvalidRead", "Invalid read of size 4", 3}, {read.kind, read.message, read.count})
      assert.are.same({"Memcheck", "Addr4"}, {read.supp_tool, read.supp_kind})
      assert.are.same({"/usr/bin/luajit", "lua_pcall"}, functions(read.frames))
      assert.are.equal("Address 0x4b65644 is 4 bytes inside a block of size 16 free'd", read.aux[1].what)
      assert.are.same({"free", "/usr/bin/luajit"}, functions(read.aux[1].frames))
      assert.are.same({what = "Block was alloc'd at", frames = read.aux[2].frames}, read.aux[2])
      assert.are.same({"Param", "write(buf)", 1}, {param.supp_kind, param.supp_extra, param.count})
      assert.are.equal("Uninitialised value was created by a heap allocation", param.aux[2].what)
      assert.are.same({"malloc"}, functions(param.aux[2].frames))
      assert.are.same({"InvalidFree", "Free", 1}, {free.kind, free.supp_kind, free.count})
   end)

   it("reads protocol 5's file descriptor errors (--track-fds)", function()
      local proc = assert(vgxml.parse(sample("fds.xml"), "vg.5151.xml"))
      assert.are.equal(5, proc.protocol)
      local bad, open = proc.errors[1], proc.errors[2]
      assert.are.same({"FdBadClose", 99, "CoreError", "FdBadClose"}, {bad.kind, bad.fd, bad.supp_tool, bad.supp_kind})
      assert.are.same({"FdNotClosed", 4, "/etc/hostname"}, {open.kind, open.fd, open.path})
      assert.are.same({"open", "fopen"}, functions(open.frames))
   end)

   it("keeps what a truncated file had written, and says it was truncated", function()
      local text = sample("errors.xml")
      local cut = text:find("<kind>InvalidFree</kind>", 1, true)
      local proc = assert(vgxml.parse(text:sub(1, cut), "vg.4242.xml"))
      assert.is_true(proc.truncated)
      assert.are.equal(2, #proc.errors)   -- the third was cut in the middle
      assert.are.equal(1, proc.errors[1].count)   -- the counts come at the end
      proc = assert(vgxml.parse(text:sub(1, 200), "vg.4242.xml"))
      assert.is_true(proc.truncated)
      assert.are.equal(4242, proc.pid)
   end)

   it("rejects what is not Valgrind XML", function()
      local proc, err = vgxml.parse("hello", "x/vg.1.xml")
      assert.is_nil(proc)
      assert.matches("^x/vg%.1%.xml: not Valgrind XML output", err)
      assert.is_nil((vgxml.parse("<html></html>", "vg.1.xml")))
   end)

   it("collects a run directory's files, reporting truncated ones", function()
      local dir = h.tmpdir()
      h.write_file(dir .. "/vg.8734.0000000000000000.xml", sample("chain.xml"))
      h.write_file(dir .. "/vg.4242.00000000000000aa.xml", sample("errors.xml"):sub(1, 900))
      h.write_file(dir .. "/vg.7.0000000000000000.xml", "")   -- just created: Valgrind had written nothing yet
      local procs, problems = vgxml.collect(dir)
      h.rmtree(dir)
      assert.are.same({4242, 8734}, {procs[1].pid, procs[2].pid})
      assert.are.same({{pid = 4242, file = dir .. "/vg.4242.00000000000000aa.xml", message = "truncated: process 4242 "
         .. "ended before Valgrind finished its report (killed?); kept the 0 errors and 0 leak records it had written, "
         .. "and it had not made its leak check at exit"}}, problems)
   end)

   it("reads the incremental leak checks of busted tests, counting only a definite record's direct bytes", function()
      -- "64 (+64) (32 (+32) direct, 32 (+32) indirect) bytes in 1 (+1) blocks are definitely lost":
      -- a 32-byte block holding a 32-byte block, lost in the test "nested > loses a block holding a block"
      local proc = assert(vgxml.parse(sample("incremental.xml"), "vg.7954.xml"))
      local test = "nested > loses a block holding a block"
      assert.are.same({kind = "indirect", blocks = 1, bytes = 32, test = test},
                      {kind = leak(proc, 1).kind, blocks = leak(proc, 1).blocks, bytes = leak(proc, 1).bytes,
                       test = leak(proc, 1).test})
      assert.are.same({kind = "definite", blocks = 1, bytes = 32, test = test},
                      {kind = leak(proc, 2).kind, blocks = leak(proc, 2).blocks, bytes = leak(proc, 2).bytes,
                       test = leak(proc, 2).test})
      assert.are.equal("malloc", leak(proc, 2).frames[1]["function"])
      for i = 3, #proc.leaks do assert.are.equal("reachable", proc.leaks[i].kind) end   -- nothing else lost
   end)

   -- Each report in a file by itself: what parses is kept, and each problem is named.
   local function parsed(text)
      local procs, problems = vgxml.parse_file(text, "d/vg.8734.0000000000000000.xml")
      local got = {}
      for i, p in ipairs(procs) do
         got[i] = ("%s: %d leaks, %d errors%s"):format(tostring(p.pid), #p.leaks, #p.errors,
                                                      p.truncated and ", cut" or "")
      end
      return got, problems
   end

   it("reads both reports of a file that two processes wrote, one after the other", function()
      local got, problems = parsed(sample("chain.xml") .. sample("errors.xml"))
      assert.are.same({"8734: 3 leaks, 0 errors", "4242: 0 leaks, 3 errors"}, got)
      assert.are.same({{pid = 4242, message = "line 129: a second report in this file, of process 4242: two processes "
         .. "had the same pid (in different PID namespaces?); both are read"}}, problems)
      got, problems = parsed(sample("chain.xml") .. sample("errors.xml"):sub(1, 1500))   -- the second cut short
      assert.are.same({"8734: 3 leaks, 0 errors", "4242: 0 leaks, 1 errors, cut"}, got)
      assert.are.equal(2, #problems)
      assert.matches("^truncated: process 4242 ended before Valgrind finished its report", problems[2].message)
      got, problems = parsed(sample("chain.xml") .. '<?xml version="1.0"?>\n<html></html>\n')
      assert.are.same({"8734: 3 leaks, 0 errors"}, got)
      assert.are.same({{message = "line 129: not Valgrind XML output"}}, problems)
   end)

   it("keeps the records after the end of a report (junk after the document element), with no pid", function()
      local errors = sample("errors.xml")
      local got, problems = parsed(sample("chain.xml") .. "\n" .. errors:sub((errors:find("<error>", 1, true))))
      assert.are.same({"8734: 3 leaks, 0 errors", "nil: 0 leaks, 3 errors"}, got)
      assert.are.same({
         {pid = 8734, message = "line 130: output after the end of the report; reading on from line 130"},
         {message = "line 130: 0 leak records and 3 errors of a process whose report has no start (it wrote into "
            .. "this file through a descriptor it shares with another process); kept, with no pid"}}, problems)
   end)

   it("reads on after bad XML in the middle of a report", function()
      local chain = sample("chain.xml")
      local cut = chain:find("<fn>leak_chain</fn>", 1500, true)   -- in the second record (the definite one)
      local got, problems = parsed(chain:sub(1, cut) .. "<<" .. chain:sub(cut + 1))
      assert.are.same({"8734: 1 leaks, 0 errors, cut", "8734: 1 leaks, 0 errors"}, got)   -- indirect, reachable
      assert.are.same({{pid = 8734, message = "line 89: bad XML (not well-formed (invalid token)); reading on from "
         .. "line 100, under pid 8734"}}, problems)
   end)

   it("collects every good file beside bad ones", function()
      local dir = h.tmpdir()
      local chain, errors = sample("chain.xml"), sample("errors.xml")
      for pid = 101, 120 do
         local text = chain:gsub("<pid>8734<", "<pid>" .. pid .. "<")
         h.write_file(("%s/vg.%d.0000000000000000.xml"):format(dir, pid), text)
      end
      h.write_file(dir .. "/vg.1.0000000000000000.xml", chain .. errors)
      h.write_file(dir .. "/vg.2.0000000000000000.xml", chain .. "\n" .. errors:sub((errors:find("<error>", 1, true))))
      h.write_file(dir .. "/vg.3.0000000000000000.xml", errors:sub(1, 1500))
      local procs, problems = vgxml.collect(dir)
      h.rmtree(dir)
      assert.are.equal(20 + 2 + 2 + 1, #procs)
      local leaks = 0
      for _, p in ipairs(procs) do leaks = leaks + #p.leaks end
      assert.are.equal(22 * 3, leaks)
      local files = {}
      for i, p in ipairs(problems) do files[i] = p.file:match("[^/]*$") .. " " .. tostring(p.pid) end
      assert.are.same({"vg.1.0000000000000000.xml 4242", "vg.2.0000000000000000.xml 8734",
                       "vg.2.0000000000000000.xml nil", "vg.3.0000000000000000.xml 4242"}, files)
   end)
end)

describe("Valgrind command line", function()
   it("is memcheck with a full leak check of every kind, debug info kept, children traced, one XML each", function()
      local argv = valgrind.command_line({valgrind = "/usr/bin/valgrind", dir = "/run/d", extra = {"--num-callers=20"}})
      -- ljleak's allocation functions run (Lua frames), and add two frames the reader takes out;
      -- the heap summary comes from an xtree memory file per process, which -q leaves unannounced
      assert.are.same({"/usr/bin/valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=all",
                       "--keep-debuginfo=yes", "--demangle=no", "--trace-children=yes", "--error-limit=no",
                       "--xml=yes", "--soname-synonyms=somalloc=nouserintercepts", "--xtree-memory=full",
                       "--xtree-memory-file=/run/d/xt.%p.%q{LJLEAK_VG_ID}.kcg", "-q", "--num-callers=22",
                       "--xml-file=/run/d/vg.%p.%q{LJLEAK_VG_ID}.xml"}, argv)
      assert.are.equal("--num-callers=14", valgrind.command_line({dir = "/d"})[14])
      -- Valgrind expands % in --xml-file: a % of the folder's own is written %%
      argv = valgrind.command_line({dir = "/tmp/a%p%%b"})
      assert.are.equal("--xml-file=/tmp/a%%p%%%%b/vg.%p.%q{LJLEAK_VG_ID}.xml", argv[#argv])
      assert.are.equal("--xtree-memory-file=/tmp/a%%p%%%%b/xt.%p.%q{LJLEAK_VG_ID}.kcg", argv[12])
   end)

   it("takes more options from --valgrind-opts, but not those it sets itself", function()
      local words, depth = valgrind.parse_extra({"--num-callers=30  --track-origins=yes", "-s"})
      assert.are.same({"--num-callers=30", "--track-origins=yes", "-s"}, words)
      assert.are.equal(30, depth)
      local none, err = valgrind.parse_extra({"--xml-file=/tmp/x"})
      assert.is_nil(none)
      assert.matches("--xml-file is set by ljleak", err, 1, true)
      -- Valgrind copies --xml-user-comment into its XML as it is: text that would break it is escaped
      assert.are.same({"--xml-user-comment=<b>bold</b>", "--xml-user-comment=a&lt;b&amp;c"},
                      (valgrind.parse_extra({"--xml-user-comment=<b>bold</b> --xml-user-comment=a<b&c"})))
   end)

   it("turns LuaJIT's JIT off through LUA_INIT, and still runs the user's LUA_INIT", function()
      assert.are.equal("if jit then jit.off() end", engines.with_jit("off"))
      assert.are.equal('if jit then jit.off() end\ndofile("/x/init.lua")', engines.with_jit("off", "@/x/init.lua"))
      assert.are.equal("print(1)", engines.with_jit("on", "print(1)"))
      assert.is_nil(engines.with_jit("on", ""))
   end)
end)

-- -- Running ljleak, several at once -----------------------------------------------------------

local job, run_all = h.job, h.run_all

local function fixture(name, ...)
   local args = {"--engine=valgrind", ...}
   args[#args + 1] = "--"
   args[#args + 1] = "luajit"
   args[#args + 1] = "t/leak/" .. name .. ".lua"
   return job(args)
end

local one, only_definite = h.one, h.only_definite

local function unsuppressed(report)
   local n = {}
   for _, set in ipairs({report.leaks, report.errors or {}}) do
      for _, rec in ipairs(set) do
         if rec.suppressed_by == nil or rec.suppressed_by == cjson.null then
            n[#n + 1] = ("%s %s %s"):format(rec.kind, tostring(rec.bytes or rec.message),
                                            table.concat(functions(rec.frames), " < "))
         end
      end
   end
   return n
end

local have_valgrind = valgrind.find() ~= nil

describe("ljleak run --engine=valgrind", function()
   if not have_valgrind then
      pending("needs valgrind (apt-get install valgrind)")
      return
   end
   local problems_tmp = h.tmpdir()
   local percent_tmp = h.tmpdir() .. "/a%p%q{HOME}%%b"
   assert(require("lfs").mkdir(percent_tmp))
   local can_unshare = h.run({"unshare", "--pid", "--fork", "true"}) == 0

   local jobs = {
      lines = job({"--engine=valgrind", "--", "luajit", "t/api/lines.lua"}),
      errors = fixture("vg_errors"),
      killed = job({"--engine=valgrind", "--", "luajit", "t/leak/vg_errors.lua"}, {VG_ERRORS_KILL = "1"}),
      segv = fixture("vg_segv"),
      -- A report file that two processes wrote and one cut short, among good ones (TMPDIR: the
      -- script finds its own report file in the run directory).
      problems = job({"--engine=valgrind", "--", "sh", "t/leak/vg_problems.sh"}, {TMPDIR = problems_tmp}),
      -- A % in TMPDIR (Valgrind expands % in --xml-file), and a user comment that is not XML.
      percent = job({"--engine=valgrind", "--valgrind-opts=--xml-user-comment=a<b&c", "--", "luajit",
                     "t/leak/malloc_dropped.lua"}, {TMPDIR = percent_tmp}),
      -- Valgrind refuses to start a process whose environment lacks the variable in the XML file's
      -- name: libljleak_vg.so puts it back (env execs luajit with an empty environment).
      env_i = job({"--engine=valgrind", "--", "env", "-i", "luajit", "t/leak/malloc_dropped.lua"}),
      namespaces = can_unshare and job({"--engine=valgrind", "--", "sh", "t/leak/vg_pid_namespaces.sh"}) or nil,
      -- On a terminal (script(1) gives it one, of 24 rows): the status line while Valgrind runs
      -- (t/progress_spec.lua reads such a terminal back).
      terminal = {argv = {"script", "-qefc", "stty rows 24 cols 100; bin/ljleak run --engine=valgrind -- luajit -e "
         .. "'local t = os.clock() while os.clock() - t < 1.5 do end'", "/dev/null"}},
   }
   setup(function() run_all(jobs) end)

   it("gives each record the Lua frames of the code that called C, as the tracker does", function()
      local rec = one(jobs.lines.report, "definite")
      local lines = {}
      for i, f in ipairs(rec.lua) do lines[i] = f.line end
      assert.are.same({7, 12, 16}, lines)
      assert.are.same({"malloc", "vgpreload_memcheck-amd64-linux.so"},
                      {rec.frames[1]["function"], rec.frames[1].object:match("[^/]*$")})
      for _, f in ipairs(rec.frames) do   -- ljleak's trampoline and allocation function taken out
         assert.is_nil((f.object or ""):match("libljleak_vg"))
         assert.is_truthy(f.object)
      end
   end)

   it("reports memcheck's errors (use after free, double free) as records that fail the run", function()
      local r = jobs.errors.report
      assert.are.equal(42, jobs.errors.code)
      only_definite(r, 0, 0)
      assert.are.equal(2, #r.errors)
      local read, free = r.errors[1], r.errors[2]
      assert.are.same({"InvalidRead", "Invalid read of size 4", 3, "Addr4"},
                      {read.kind, read.message, read.count, read.supp_kind})
      assert.matches("4 bytes inside a block of size 16 free'd", read.aux[1].what, 1, true)
      assert.are.same({"InvalidFree", 1, "free"}, {free.kind, free.count, free.frames[1]["function"]})
      assert.matches("error: InvalidRead, pid %d+ %(3 times%)\n    Invalid read of size 4\n    at ", jobs.errors.stderr)
   end)

   it("reports what a killed process had written, says its report was truncated, and exits 128+N", function()
      local j = jobs.killed
      assert.are.equal(137, j.code)   -- killed (SIGKILL), though its error would fail the run
      assert.are.equal(137, j.report.exit_status)
      assert.are.equal("InvalidRead", j.report.errors[1].kind)
      assert.is_true(j.report.processes[1].truncated)
      local pid = j.report.processes[1].pid
      assert.are.same({{pid = pid, file = j.report.problems[1].file, message = ("truncated: process %d ended before "
         .. "Valgrind finished its report (killed?); kept the 2 errors and 0 leak records it had written, and it had "
         .. "not made its leak check at exit"):format(pid)}}, j.report.problems)
      assert.matches(("^/.*/vg%%.%d%%.%%x+%%.xml$"):format(pid), j.report.problems[1].file)
      assert.matches(("\nPROBLEMS:\n  /[^\n]*/vg%%.%d%%.%%x+%%.xml %%(pid %d%%): truncated: process %d ended before")
         :format(pid, pid, pid), j.stderr)
   end)

   it("exits 139 for a program killed by SIGSEGV, its invalid write listed", function()
      local j = jobs.segv
      assert.are.equal(139, j.code)   -- not 42: the invalid write fails the run only if the program lived
      assert.are.equal(139, j.report.exit_status)
      assert.are.equal(1, #j.report.errors)
      local e = j.report.errors[1]
      assert.are.same({"InvalidWrite", "Invalid write of size 4", "Addr4"}, {e.kind, e.message, e.supp_kind})
      assert.are.equal("Address 0x10 is not stack'd, malloc'd or (recently) free'd", e.aux[1].what)
      assert.are.equal("SIGSEGV", j.report.processes[1].fatal_signal)
      assert.matches("error: InvalidWrite, pid %d+\n    Invalid write of size 4\n", j.stderr)
   end)

   it("reads every report file, names each bad one, and keeps what they had", function()
      local j = jobs.problems
      h.rmtree(problems_tmp)
      local r = j.report
      assert.are.equal(42, j.code, j.stderr)
      only_definite(r, 1, 100)   -- malloc_dropped.lua's, in a good file
      one(r, "definite")
      -- the killed luajit's two errors, and the three of the report appended to the shell's file
      assert.are.equal(2, #r.problems)
      local shared, cut = r.problems[1], r.problems[2]
      if shared.pid ~= 4242 then shared, cut = cut, shared end
      local kinds = {}
      for _, e in ipairs(r.errors) do kinds[#kinds + 1] = e.pid .. " " .. e.kind end
      table.sort(kinds)
      local killed = cut.pid
      local expected = {"4242 InvalidFree", "4242 InvalidRead", "4242 SyscallParam", killed .. " InvalidFree",
                        killed .. " InvalidRead"}
      table.sort(expected)
      assert.are.same(expected, kinds)
      assert.are.equal(4242, shared.pid)
      assert.matches("/vg%.%d+%.0000000000000000%.xml$", shared.file)
      assert.matches("^line %d+: a second report in this file, of process 4242: two processes had the same pid %(in "
         .. "different PID namespaces%?%); both are read$", shared.message)
      assert.matches("^truncated: process " .. killed .. " ended before Valgrind finished its report", cut.message)
      assert.matches("\nPROBLEMS:\n", j.stderr, 1, true)
      assert.matches("\n  " .. shared.file:gsub("%p", "%%%0")
                     .. " %(pid 4242%): line %d+: a second report in this file", j.stderr)
   end)

   it("works with a % in TMPDIR, and with a --xml-user-comment that is not XML", function()
      local j = jobs.percent
      h.rmtree(percent_tmp:match("^(.*)/"))
      assert.are.equal(42, j.code, j.stderr)
      only_definite(j.report, 1, 100)
      assert.are.equal("malloc", one(j.report, "definite").frames[1]["function"])
      assert.are.same({}, j.report.problems)
   end)

   it("names each process's report file uniquely: pid 1 of two PID namespaces, a program run by env -i", function()
      only_definite(jobs.env_i.report, 1, 100)
      assert.are.equal(42, jobs.env_i.code, jobs.env_i.stderr)
      if not can_unshare then
         pending("needs unshare --pid (root)")
         return
      end
      local r = jobs.namespaces.report
      assert.are.equal(42, jobs.namespaces.code, jobs.namespaces.stderr)
      only_definite(r, 2, 112)
      assert.are.equal(1, one(r, "definite", "leak_strdup").pid)
      local dropped = h.record_of_size(r, "definite", 100, "malloc")
      assert.are.equal(1, dropped.pid)
      assert.are.same({}, r.problems)
   end)

   it("shows a live status line on a terminal, and nothing extra when stderr is not one", function()
      local out = jobs.terminal.stdout
      assert.are.equal(0, jobs.terminal.code, out)
      -- drawn on the last row (the cursor saved and restored around it), then erased, the whole
      -- screen given back, before the report
      assert.matches("\0277\27%[24;1H\27%[2Kljleak: valgrind 0:0%d elapsed, 1 process running, 0 records so far\0278",
                     out)
      assert.matches("\0277\27%[r\27%[24;1H\27%[2K\0278ljleak: leak check of 1 process", out)
      for name, j in pairs(jobs) do
         if name ~= "terminal" then
            assert.is_nil(j.stderr:find("so far", 1, true), name)
            assert.is_nil(j.stderr:find("\r", 1, true), name)
         end
      end
   end)
end)

describe("ljleak run, bad input", function()
   it("exits 2 with the package to install when valgrind is missing, running nothing", function()
      local dir = h.tmpdir()
      local code, out, err = h.run({h.BIN, "run", "--engine=valgrind", "--",
                                    "/usr/bin/touch", dir .. "/marker"}, {env = {PATH = dir}})
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.matches("^ljleak: %-%-engine=valgrind: valgrind was not found on PATH: install it %(Debian/Ubuntu: "
         .. "apt%-get install valgrind", err)
      assert.is_nil(h.read_file(dir .. "/marker"))
      h.rmtree(dir)
   end)

   it("exits 2 on a malformed suppression file with FILE:LINE, running nothing", function()
      local dir = h.tmpdir()
      h.write_file(dir .. "/bad.supp", "{\n   fine\n   Memcheck:Leak\n   fun:malloc\n}\n{\n   broken\n"
         .. "   Memcheck:Leak\n   fun:malloc\n   function:oops\n}\n")
      for _, engine in ipairs({"tracker", "valgrind"}) do
         local code, _, err = h.run({h.BIN, "run", "--engine=" .. engine,
                                     "--suppressions=" .. dir .. "/bad.supp", "--", "touch", dir .. "/marker"})
         assert.are.equal(2, code)
         assert.are.equal(("ljleak: suppressions: %s/bad.supp:10: bad location 'function:oops': a frame is '...', "
            .. "or starts with fun:, obj:, src: or lua:\n"):format(dir), err)
         assert.is_nil(h.read_file(dir .. "/marker"))
      end
      h.rmtree(dir)
   end)

   it("rejects --valgrind-opts that would change what ljleak reads", function()
      local code, _, err = h.run({h.BIN, "run", "--engine=valgrind", "--valgrind-opts=--xml=no", "--", "true"})
      assert.are.equal(2, code)
      assert.are.equal("ljleak: --valgrind-opts: --xml is set by ljleak and cannot be changed\n", err)
      local refused = {"--tool=helgrind", "--xml=no", "--xml-file=x", "--leak-check=summary",
                       "--show-leak-kinds=definite", "--trace-children=no", "--error-limit=yes", "--keep-debuginfo=no",
                       "--show-reachable=no",
                       "--show-possibly-lost=no", "--errors-for-leak-kinds=all", "--xtree-leak=yes", "--xml-fd=3",
                       "--xml-socket=127.0.0.1", "--log-fd=9", "--log-file=v.log", "--log-socket=127.0.0.1",
                       "--child-silent-after-fork=yes", "--gen-suppressions=all", "--error-exitcode=3",
                       "--exit-on-first-error=yes", "-h", "--help", "--version", "--soname-synonyms=somalloc=*",
                       "--xtree-memory=allocs", "--xtree-memory-file=x.kcg"}
      local names = {}
      for name in pairs(valgrind.REFUSED) do names[#names + 1] = name end
      assert.are.equal(#names, #refused)   -- each one is tried here
      for _, opt in ipairs(refused) do
         local name = opt:match("^[^=]+")
         assert.is_truthy(valgrind.REFUSED[name], name)
         code, _, err = h.run({h.BIN, "run", "--engine=valgrind", "--valgrind-opts=-q " .. opt, "--", "true"})
         assert.are.equal(2, code, opt)
         assert.are.equal(("ljleak: --valgrind-opts: %s %s\n"):format(name, valgrind.REFUSED[name]), err)
      end
      code, _, err = h.run({h.BIN, "run", "--engine=valgrind", "--valgrind-opts=foo", "--", "true"})
      assert.are.equal(2, code)
      assert.are.equal("ljleak: --valgrind-opts: 'foo' is not an option (Valgrind would run it as the program)\n", err)
   end)
end)

describe("suppressions on both engines", function()
   if not have_valgrind then
      pending("needs valgrind (apt-get install valgrind)")
      return
   end
   local nginx = require "t.nginx"

   -- Clean programs: `luajit -e 'require"ffi"'`, a program that exits without closing its Lua
   -- state after the JIT compiled a loop, and a busted suite; nginx serving Lua comes after.
   local CLEAN = {
      ffi = {"luajit", "-e", "require 'ffi'"},
      os_exit = {"luajit", "-e", "local x = 0 for i = 1, 1000 do x = x + i end os.exit(0)"},
      busted = {"luajit", "/usr/bin/busted", "t/fixture/trivial_spec.lua"},
   }
   local jobs = {}
   for _, engine in ipairs({"tracker", "valgrind"}) do
      for name, cmd in pairs(CLEAN) do
         local args = {"--engine=" .. engine, "--jit=on", "--"}
         for _, a in ipairs(cmd) do args[#args + 1] = a end
         jobs[engine .. " " .. name] = job(args)
      end
   end
   local generated = {}
   for _, engine in ipairs({"tracker", "valgrind"}) do
      generated[engine] = h.tmpdir() .. "/gen.supp"
      jobs["gen " .. engine] = job({"--engine=" .. engine, "--gen-suppressions=" .. generated[engine],
                                    "--", "luajit", "t/leak/chain.lua"})
   end
   generated.errors = h.tmpdir() .. "/gen.supp"
   jobs["gen errors"] = fixture("vg_errors", "--gen-suppressions=" .. generated.errors)

   setup(function()
      run_all(jobs)
      -- Apply what was generated to the same programs again.
      local again = {}
      for _, engine in ipairs({"tracker", "valgrind"}) do
         again["again " .. engine] = job({"--engine=" .. engine, "--suppressions=" .. generated[engine],
                                          "--", "luajit", "t/leak/chain.lua"})
      end
      again["again errors"] = fixture("vg_errors", "--suppressions=" .. generated.errors)
      run_all(again)
      for k, v in pairs(again) do jobs[k] = v end
      if nginx.available() then
         for _, engine in ipairs({"tracker", "valgrind"}) do
            for _, mode in ipairs({"single", "workers"}) do   -- one process; a master and a worker
               local j = {}
               j.report, j.code, j.stderr, j.bodies = nginx.run({"--engine=" .. engine}, nil, {mode = mode})
               jobs[engine .. " nginx " .. mode] = j
            end
         end
      end
   end)

   teardown(function()
      for _, path in pairs(generated) do h.rmtree(path:match("^(.*)/")) end
   end)

   it("leave no unsuppressed record of clean programs, under both engines", function()
      for _, engine in ipairs({"tracker", "valgrind"}) do
         for name in pairs(CLEAN) do
            local j = jobs[engine .. " " .. name]
            assert.are.equal(0, j.code, engine .. " " .. name .. ": " .. j.stderr)
            assert.are.same({}, unsuppressed(j.report), engine .. " " .. name)
         end
      end
   end)

   it("leave no unsuppressed record of nginx serving Lua (one process; master and worker), both engines", function()
      if not nginx.available() then
         pending("needs nginx with the Lua module (make deps)")
         return
      end
      for _, engine in ipairs({"tracker", "valgrind"}) do
         for _, mode in ipairs({"single", "workers"}) do
            local j = jobs[engine .. " nginx " .. mode]
            assert.are.same({"hello /a\n", "hello /b\n", "hello /c\n"}, j.bodies, j.stderr)
            assert.are.equal(0, j.code, j.stderr)
            assert.are.same({}, unsuppressed(j.report), engine .. " " .. mode)
         end
      end
   end)

   it("have no dead entry: each default entry suppresses something in those runs", function()
      local used = {}
      for _, j in pairs(jobs) do
         for _, u in ipairs(j.report and j.report.suppressions or {}) do used[u.name] = true end
      end
      for _, file in ipairs(assert(supp.default_files())) do
         for _, e in ipairs(assert(supp.read(file))) do
            assert.is_true(used[e.name] == true, ("%s (%s:%d) matched nothing"):format(e.name, file, e.line))
         end
      end
   end)

   it("are listed in the summary with the records and bytes each one suppressed", function()
      local tracker = jobs["tracker os_exit"]
      assert.are.same({{name = "libgcc-register-frame-of-luajit-mcode", file = supp.default_dir() .. "/libgcc.supp",
                        line = 10, records = 1, blocks = 1, bytes = 48, count = 0}}, tracker.report.suppressions)
      assert.matches("\nSUPPRESSIONS USED:\n    count      bytes  name\n        1         48  "
         .. "libgcc%-register%-frame%-of%-luajit%-mcode %(/.*/libgcc%.supp:10%)\n$", tracker.stderr)
   end)

   it("generated from a run, suppress exactly what that run found when applied to it again", function()
      for _, name in ipairs({"tracker", "valgrind", "errors"}) do
         local first, second = jobs["gen " .. name], jobs["again " .. name]
         assert.are.equal(42, first.code)
         local found = unsuppressed(first.report)
         assert.is_true(#found > 0)
         assert.are.equal(0, second.code, second.stderr)
         assert.are.same({}, unsuppressed(second.report), name)
         -- the records suppressed now are the ones found before, each by a generated entry
         local names = {}
         for _, e in ipairs(assert(supp.read(generated[name]))) do names[e.name] = true end
         local now = {}
         for _, set in ipairs({second.report.leaks, second.report.errors}) do
            for _, rec in ipairs(set) do
               if names[rec.suppressed_by] then
                  now[#now + 1] = ("%s %s %s"):format(rec.kind, tostring(rec.bytes or rec.message),
                                                      table.concat(functions(rec.frames), " < "))
               end
            end
         end
         table.sort(found)
         table.sort(now)
         assert.are.same(found, now, name)
      end
   end)
end)
