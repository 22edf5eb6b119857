-- busted spec for the Lua side of `ljleak run` that needs no tracker: raw report parsing, the JSON
-- writer, and the command line's errors and exit codes (run as a real subprocess).
-- Run from the checkout: luajit /usr/bin/busted t/cli_spec.lua
local stdlib = require "posix.stdlib"
local cjson = require "cjson"
local h = require "t.helper"

local raw = require "ljleak.raw"
local format = require "ljleak.format"
local model = require "ljleak.model"
local symbolize = require "ljleak.symbolize"

local ROOT, BIN = h.ROOT, h.BIN

local function read_file(path)
   return h.read_file(path) or error("cannot read " .. path)
end

local write_file = h.write_file

local function exists(path)
   local f = io.open(path, "rb")
   if f then f:close() end
   return f ~= nil
end

local tmpdir

-- Run bin/ljleak with ARGS (a list: no shell involved). Returns exit code, stdout, stderr.
-- ENV: extra environment variables for the CLI.
local function ljleak(args, env)
   local argv = {BIN}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   return h.run(argv, {env = env})
end

-- The one line a usage error must produce.
local function assert_one_line(stderr)
   assert.equal(1, select(2, stderr:gsub("\n", "")), "want one line, got: " .. stderr)
   assert.matches("^ljleak: ", stderr)
end

setup(function()
   tmpdir = assert(stdlib.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/ljleak-spec.XXXXXX"))
end)

teardown(function()
   h.rmtree(tmpdir)
end)

local GOOD = [[
ljleak-raw 1
pid 4242
ppid 4241
exe /usr/bin/luajit
cmd luajit -e print("a%20b") - %2d
lua_state closed
module 0 0x55d0c0a00000 /usr/bin/luajit
module 1 0x7f1c2d400000 /usr/lib/x86_64-linux-gnu/libc.so.6
site 7 malloc 3 1:0x8a2f1 0:1234 ?:0x7f1c2e0010a0
site 9 calloc 1 0:0x10
future-line-type whatever 1 2 3
leak definite 7 3 300
leak reachable 9 1 48
leak indirect 9 2 64 owner=7
stats allocs=1234 frees=1200 live_blocks=34
end
]]

describe("raw report parser", function()
   it("reads every line type of a complete report", function()
      local proc = assert(raw.parse(GOOD, "proc.4242.raw"))
      assert.is_false(proc.truncated)
      assert.equal(4242, proc.pid)
      assert.equal(4241, proc.ppid)
      assert.equal("/usr/bin/luajit", proc.exe)
      assert.same({"luajit", "-e", 'print("a b")', "", "-"}, proc.command)
      assert.equal("closed", proc.lua_state)
      assert.same({index = 1, bias = 0x7f1c2d400000, path = "/usr/lib/x86_64-linux-gnu/libc.so.6"}, proc.modules[1])
      assert.same({id = 7, fn = "malloc", frames = {
         {module = 1, offset = 0x8a2f1}, {module = 0, offset = 1234}, {address = 0x7f1c2e0010a0}}}, proc.sites[7])
      assert.same({{kind = "definite", site = 7, blocks = 3, bytes = 300},
                    {kind = "reachable", site = 9, blocks = 1, bytes = 48},
                    {kind = "indirect", site = 9, blocks = 2, bytes = 64, owner = 7}}, proc.leaks)
      assert.same({allocs = 1234, frees = 1200, live_blocks = 34}, proc.stats)
   end)

   it("marks a report without `end` as truncated and drops the cut-off last line", function()
      local text = GOOD:gsub("end\n$", ""):gsub("stats.*$", "leak possible 9 2 9")   -- no newline: cut mid-write
      local proc = assert(raw.parse(text, "proc.4242.raw"))
      assert.is_true(proc.truncated)
      assert.equal(3, #proc.leaks)
   end)

   it("drops a truncated report's leaks of sites that were cut off", function()
      local proc = assert(raw.parse("ljleak-raw 1\npid 5\nleak definite 3 1 10\n", "proc.5.raw"))
      assert.is_true(proc.truncated)
      assert.same({}, proc.leaks)
   end)

   local malformed = {
      {"bad header", "ljleak-raw 2\n", 1, "unsupported raw format version 2"},
      {"not a raw file", "hello\n", 1, "not an ljleak raw report"},
      {"bad pid", "ljleak-raw 1\npid x\nend\n", 2, "bad pid 'x'"},
      {"frame count", "ljleak-raw 1\npid 1\nmodule 0 0x10 /x\nsite 1 malloc 2 0:0x1\nend\n", 4,
       "2 frames announced, 1 given"},
      {"bad frame", "ljleak-raw 1\npid 1\nsite 1 malloc 1 0-0x1\nend\n", 3, "bad frame '0%-0x1'"},
      {"unknown kind", "ljleak-raw 1\npid 1\nleak lost 1 1 1\nend\n", 3, "unknown leak kind 'lost'"},
      {"bad owner", "ljleak-raw 1\npid 1\nleak indirect 1 1 1 owner=x\nend\n", 3, "bad number in leak line"},
      {"undefined site", "ljleak-raw 1\npid 1\nleak definite 8 1 1\nend\n", 3, "site 8, which is not defined"},
      {"undefined module", "ljleak-raw 1\npid 1\nsite 1 malloc 1 3:0x1\nend\n", 3, "module 3, which is not defined"},
      {"bad stats", "ljleak-raw 1\npid 1\nstats allocs=many\nend\n", 3, "bad stats item 'allocs=many'"},
   }
   for _, case in ipairs(malformed) do
      it("rejects a malformed line with FILE:LINE: " .. case[1], function()
         local proc, err = raw.parse(case[2], "/run/proc.1.raw")
         assert.is_nil(proc)
         assert.matches("^/run/proc%.1%.raw:" .. case[3] .. ": ", err)
         assert.matches(case[4], err)
      end)
   end
end)

describe("the tests lists of a run directory", function()
   local engines = require "ljleak.engine"

   it("reads every record in order, and names each line that is not one", function()
      local dir = tmpdir .. "/tests-lists"
      assert(require("lfs").mkdir(dir))
      local rec = '{"name":"a > %s","file":"a_spec.lua","line":%s,"time":0.5,"status":"success"}'
      write_file(dir .. "/tests.20.jsonl", rec:format("one", 3) .. "\n" .. rec:format("two", "null") .. "\n")
      write_file(dir .. "/tests.30.jsonl", rec:format("three", 7) .. "\n   \n" .. "[1]\n\n"
         .. rec:format("four", 9) .. ", {}\n" .. rec:format("five", 11))
      write_file(dir .. "/tests.40.jsonl", "")
      write_file(dir .. "/tests.50.jsonl", rec:format("six", 1) .. ", " .. rec:format("seven", 2) .. "\n")
      local tests, problems = engines.read_tests(dir)
      local got = {}
      for i, t in ipairs(tests) do got[i] = ("%d %s %s"):format(t.pid, t.name, tostring(t.line)) end
      assert.are.same({"20 a > one 3", "20 a > two nil", "30 a > three 7", "30 a > five 11"}, got)
      assert.are.equal(0.5, tests[1].time)
      local said = {}
      for i, p in ipairs(problems) do said[i] = p.message:gsub("^.*/", "") end
      assert.are.same({"tests.30.jsonl:2: not a test record", "tests.30.jsonl:3: not a test record",
                       "tests.30.jsonl:5: not a test record", "tests.50.jsonl:1: not a test record"}, said)
      h.rmtree(dir)
   end)
end)

describe("collecting a tracker run directory", function()
   local tracker = require "ljleak.engine.tracker"

   it("costs a process whose report is bad, never the run, and names the file and the problem", function()
      local dir = tmpdir .. "/collect"
      assert(require("lfs").mkdir(dir))
      write_file(dir .. "/proc.4242.raw", GOOD)
      write_file(dir .. "/proc.4243.raw",
         GOOD:gsub("pid 4242", "pid 4243"):gsub("\nend\n", "\nleak definite 99 1 1\nend\n"))
      write_file(dir .. "/proc.4244.raw", GOOD:gsub("pid 4242", "pid 4244"):gsub("leak reachable.*$", ""))
      write_file(dir .. "/proc.4245.raw.tmp", "ljleak-raw 1\n")
      write_file(dir .. "/proc.4246.live", "")
      write_file(dir .. "/proc.99999999.live", "ljleak-raw 1\npid 99999999\n")   -- cut while written into
      write_file(dir .. "/proc.4246.exec",
         "exec'd /bin/static, which is statically linked: LD_PRELOAD cannot load the tracker into it\n")
      write_file(dir .. "/lua.4242.jsonl", '{"kind": "bad_free", "message": "m", "pid": 4242}\nnot json\n')
      local procs, problems, errors, unchecked = tracker.collect_dir(dir)
      local pids = {}
      for i, p in ipairs(procs) do pids[i] = p.pid end
      assert.are.same({4242, 4244}, pids)
      assert.is_true(procs[2].truncated)
      local said = {}
      for _, p in ipairs(problems) do said[#said + 1] = p.message end
      table.sort(said)
      assert.are.equal(5, #said)
      assert.matches("proc.4243.raw:%d+: leak of site 99, which is not defined", table.concat(said, "\n"))
      assert.matches("proc.4244.raw: truncated", table.concat(said, "\n"), 1, true)
      assert.matches("process 4245 died while writing its report", table.concat(said, "\n"), 1, true)
      assert.matches("process 99999999 died while writing its report (" .. dir .. "/proc.99999999.live)",
                     table.concat(said, "\n"), 1, true)
      assert.matches("lua.4242.jsonl:2: not an error record", table.concat(said, "\n"), 1, true)
      assert.are.equal(1, #errors)
      assert.are.same({{pid = 4246, reason = "exec'd /bin/static, which is statically linked: LD_PRELOAD cannot "
         .. "load the tracker into it"}}, unchecked)
      h.rmtree(dir)
   end)

   it("parses each report once: as it appears while the command runs, again only when replaced", function()
      local dir = tmpdir .. "/ahead"
      assert(require("lfs").mkdir(dir))
      write_file(dir .. "/proc.4242.raw", GOOD)
      local state, given = {}, {}
      local tick = tracker.ticker(state, dir, {enabled = false}, function(proc)
         given[#given + 1] = proc.pid
         error("a failure here is met again when the report is built: the run goes on")
      end)
      local read = spy.on(raw, "read")
      local ok, err = pcall(function()
         tick()   -- the command is young: the directory is read at once
         assert.spy(read).was.called(1)
         assert.spy(read).was.called_with(dir .. "/proc.4242.raw")
         assert.are.same({4242}, given)
         tick()
         assert.spy(read).was.called(1)
         assert.are.same({4242}, given)
         write_file(dir .. "/proc.4243.raw", (GOOD:gsub("pid 4242", "pid 4243")))
         local result = {pid = 4242, how = "exited", status = 0}
         local procs = tracker.collect(state, dir, result)
         assert.spy(read).was.called(2)   -- 4243's only
         assert.are.same({4242, 4243}, {procs[1].pid, procs[2].pid})
         assert.are.equal(300, procs[1].leaks[1].bytes)
         -- A later process of pid 4242 renames its own report over the first one's.
         write_file(dir .. "/proc.4242.raw.tmp", (GOOD:gsub("definite 7 3 300", "definite 7 5 500")))
         assert(os.rename(dir .. "/proc.4242.raw.tmp", dir .. "/proc.4242.raw"))
         procs = tracker.collect(state, dir, result)
         assert.spy(read).was.called(3)
         assert.are.same({4242, 4243}, {procs[1].pid, procs[2].pid})
         assert.are.same({kind = "definite", site = 7, blocks = 5, bytes = 500}, procs[1].leaks[1])
         -- A report too big to parse in a tick waits for the end.
         local ahead = tracker.AHEAD_BYTES
         tracker.AHEAD_BYTES = #GOOD - 1
         write_file(dir .. "/proc.4244.raw", (GOOD:gsub("pid 4242", "pid 4244")))
         local ok2, err2 = pcall(function()
            state.parsed, given = {}, {}
            tick = tracker.ticker(state, dir, {enabled = false}, function(proc) given[#given + 1] = proc.pid end)
            tick()
            assert.are.same({}, given)
            assert.spy(read).was.called(3)
            procs = tracker.collect(state, dir, result)
            assert.are.same({4242, 4243, 4244}, {procs[1].pid, procs[2].pid, procs[3].pid})
         end)
         tracker.AHEAD_BYTES = ahead
         assert(ok2, err2)
      end)
      read:revert()
      h.rmtree(dir)
      assert(ok, err)
   end)
end)

describe("JSON report", function()
   local sym = symbolize.new({core = false, tracker = "/lib/libljleak.so"})

   it("writes empty arrays as [] and absent test/suppressed_by as null", function()
      local proc = assert(raw.parse(GOOD, "proc.4242.raw"))
      local rep = model.build({proc}, {command = {"luajit", "app.lua"}, exit_status = 0, symbolizer = sym})
      local text = format.format(rep, "json")
      assert.matches('"lua": %[%]', text)
      assert.matches('"test": null', text)
      assert.matches('"suppressed_by": null', text)
      local data = cjson.decode(text)
      assert.equal(1, data.schema)
      assert.equal("ljleak", data.tool)
      assert.same({"luajit", "app.lua"}, data.command)
      assert.same({blocks = 3, bytes = 300}, data.summary.definite)
      assert.same({blocks = 1, bytes = 48}, data.summary.reachable)
      assert.same({blocks = 2, bytes = 64}, data.summary.indirect)
      -- numbered in order: the definite record, the indirect one it holds, then the reachable one
      local order = {}
      for _, r in ipairs(data.leaks) do order[#order + 1] = {r.id, r.kind, r.owner} end
      assert.same({{1, "definite"}, {2, "indirect", 1}, {3, "reachable"}}, order)
      local leak = data.leaks[1]
      assert.equal("definite", leak.kind)
      assert.equal(4242, leak.pid)
      -- Frame 0 is the allocation function, as Valgrind shows it; then the raw frames in order.
      assert.same({["function"] = "malloc", object = "/lib/libljleak.so"}, leak.frames[1])
      assert.same({object = "/usr/lib/x86_64-linux-gnu/libc.so.6", offset = "0x8a2f1"}, leak.frames[2])
      assert.same({address = "0x7f1c2e0010a0"}, leak.frames[4])
   end)

   it("writes a run without leaks with \"leaks\": [] and an empty command as []", function()
      local text = format.format(model.build({}, {symbolizer = sym}), "json")
      assert.matches('"leaks": %[%]', text)
      assert.matches('"command": %[%]', text)
      assert.matches('"processes": %[%]', text)
   end)

   it("names frames as the text summary shows them", function()
      assert.equal("make_thing (thing.c:12) [/p/libthing.so]", symbolize.frame_text(
         {["function"] = "make_thing", file = "thing.c", line = 12, object = "/p/libthing.so"}))
      assert.equal("/p/libthing.so+0x1167", symbolize.frame_text({object = "/p/libthing.so", offset = "0x1167"}))
      assert.equal("[JIT code or unknown] 0x7f00", symbolize.frame_text({address = "0x7f00"}))
   end)

   it("lists reachable records only when asked, but always counts them", function()
      local proc = assert(raw.parse(GOOD, "proc.4242.raw"))
      local rep = model.build({proc}, {symbolizer = sym})
      local plain = format.format(rep, "text")
      assert.matches("\ndefinite: 300 bytes in 3 blocks (+64 bytes in 2 blocks indirect, below), pid 4242 "
                     .. "(loss record 1 of 2)\n", "\n" .. plain, 1, true)
      assert.matches("\nindirect: 64 bytes in 2 blocks, held by loss record 1, pid 4242 (loss record 2 of 2)\n",
                     plain, 1, true)
      assert.not_matches("reachable: 48 bytes in 1 block, pid", plain, 1, true)
      assert.matches("reachable: 48 bytes in 1 block\n", plain, 1, true)
      local full = format.format(rep, "text", {show_reachable = true})
      assert.matches("\nreachable: 48 bytes in 1 block, pid 4242 (loss record 3 of 3)\n", full, 1, true)
      -- a --fail-on kind is always listed: what fails the run is shown
      local failing = format.format(rep, "text", {fail_on = {reachable = true}})
      assert.matches("\nreachable: 48 bytes in 1 block, pid 4242 (loss record 3 of 3)\n", failing, 1, true)
      assert.not_matches("rerun with --show-reachable", failing, 1, true)
   end)
end)

describe("ljleak run command line", function()
   it("passes 60,000 arguments on", function()
      local args = {"run", "--", "sh", "-c", 'echo "$# $1 $60000"', "sh"}
      for i = 1, 60000 do args[#args + 1] = tostring(i) end
      local code, out = ljleak(args)
      assert.equal(0, code)
      assert.equal("60000 1 60000\n", out)
   end)

   it("says in one line when the command cannot be started, and runs nothing of its own in the child", function()
      -- The user's LUA_INIT fits; with ljleak's bootstrap before it, exec refuses the string.
      local code, out, err = ljleak({"run", "--", "luajit", "-e", "print(1)"},
         {LUA_INIT = "-- " .. ("x"):rep(130897)})
      assert.equal(127, code)
      assert.equal("", out)
      assert_one_line(err)
      assert.matches("^ljleak: luajit: Argument list too long\n$", err)
   end)

   it("rejects an unknown option with exit 2 and one line naming it", function()
      local code, out, err = ljleak({"run", "--no-such-option", "--", "true"})
      assert.equal(2, code)
      assert.equal("", out)
      assert_one_line(err)
      assert.matches("'--no-such-option'", err, 1, true)
   end)

   it("rejects a bad --fail-on kind, naming the option and the kind", function()
      local code, _, err = ljleak({"run", "--fail-on=definite,lost", "--", "true"})
      assert.equal(2, code)
      assert_one_line(err)
      assert.matches("--fail-on", err, 1, true)
      assert.matches("'lost'", err, 1, true)
   end)

   it("rejects a bad --error-exitcode", function()
      local code, _, err = ljleak({"run", "--error-exitcode=300", "--", "true"})
      assert.equal(2, code)
      assert_one_line(err)
      assert.matches("--error-exitcode", err, 1, true)
   end)

   it("rejects an unknown --engine", function()
      local code, _, err = ljleak({"run", "--engine=massif", "--", "true"})
      assert.equal(2, code)
      assert_one_line(err)
      assert.matches("--engine", err, 1, true)
   end)

   it("asks for `--` when the command comes without it", function()
      local marker = tmpdir .. "/marker"
      local code, _, err = ljleak({"run", "touch", marker})
      assert.equal(2, code)
      assert_one_line(err)
      assert.matches("'--'", err, 1, true)
      assert.matches("'touch'", err, 1, true)
      assert.is_false(exists(marker))
   end)

   it("asks for `--` and a command when there is neither", function()
      local code, _, err = ljleak({"run"})
      assert.equal(2, code)
      assert_one_line(err)
      assert.matches("'--'", err, 1, true)
   end)

   it("exits 127 when the command is not found", function()
      local code, _, err = ljleak({"run", "--", "ljleak-no-such-command-xyz", "arg"})
      assert.equal(127, code)
      assert.equal("ljleak: ljleak-no-such-command-xyz: command not found\n", err)
   end)

   it("exits 127 when the command is not executable", function()
      local notes = tmpdir .. "/notes.json"
      write_file(notes, "echo hi\n")   -- mode 0644 (umask permitting), so not executable
      local code, out, err = ljleak({"run", "--", notes})
      assert.equal(127, code)
      assert.equal("", out)
      assert.equal(("ljleak: %s: command not found (not executable)\n"):format(notes), err)
   end)

   it("exits 2 before running the command when --json's folder is missing", function()
      local marker = tmpdir .. "/marker"
      local json = tmpdir .. "/no-such-folder/report.json"
      local code, _, err = ljleak({"run", "--json=" .. json, "--", "touch", marker})
      assert.equal(2, code)
      assert_one_line(err)
      assert.matches("--json=" .. json, err, 1, true)
      assert.is_false(exists(marker))
   end)

   it("refuses to overwrite a file that is not an ljleak report", function()
      local marker = tmpdir .. "/marker"
      local notes = tmpdir .. "/notes.json"
      write_file(notes, '{"my": "notes"}\n')
      local code, _, err = ljleak({"run", "--json", notes, "--", "touch", marker})
      assert.equal(2, code)
      assert_one_line(err)
      assert.matches("not an ljleak report", err, 1, true)
      assert.equal('{"my": "notes"}\n', read_file(notes))
      assert.is_false(exists(marker))
   end)

   it("re-renders a saved report with `ljleak report`, and judges it as `run` would", function()
      local proc = assert(raw.parse(GOOD, "proc.4242.raw"))
      local path = tmpdir .. "/old.json"
      assert(format.write(model.build({proc}, {symbolizer = symbolize.new({core = false})}), path, "json"))
      local code, out = ljleak({"report", path})
      assert.equal(42, code)
      assert.matches("definite: 300 bytes in 3 blocks (+64 bytes in 2 blocks indirect, below), pid 4242", out, 1, true)
      assert.matches("indirect: 64 bytes in 2 blocks, held by loss record 1, pid 4242", out, 1, true)
      assert.matches("LEAK SUMMARY:", out, 1, true)
   end)

   -- A tree of the launcher, a copy of the sources and of their bytecode (build/lua), the
   -- checkout's libraries: the program's LUA_INIT names the bootstrap the CLI found.
   it("runs the bytecode that make built from its sources, and the sources once one of them is newer", function()
      local lfs = require "lfs"
      local tree = h.tmpdir()
      local function copy(from, to)
         if lfs.attributes(from, "mode") == "directory" then
            assert(lfs.mkdir(to))
            for name in lfs.dir(from) do
               if name ~= "." and name ~= ".." then copy(from .. "/" .. name, to .. "/" .. name) end
            end
         else
            write_file(to, read_file(from))
            assert(lfs.touch(to, lfs.attributes(from, "modification")))
         end
      end
      copy(ROOT .. "/bin", tree .. "/bin")
      assert.equal(0, require("posix.sys.stat").chmod(tree .. "/bin/ljleak", 493))
      copy(ROOT .. "/lua", tree .. "/lua")
      assert(lfs.mkdir(tree .. "/build"))
      copy(ROOT .. "/build/lua", tree .. "/build/lua")
      assert(lfs.mkdir(tree .. "/build/ljleak"))
      copy(ROOT .. "/suppressions", tree .. "/suppressions")
      for _, lib in ipairs({"core.so", "libljleak.so"}) do
         assert(require("posix.unistd").link(ROOT .. "/build/ljleak/" .. lib, tree .. "/build/ljleak/" .. lib, true))
      end
      local function boot()
         local code, out = h.run({tree .. "/bin/ljleak", "run", "--", "luajit", "-e", "io.write(os.getenv'LUA_INIT')"})
         assert.equal(0, code)
         return out:match("loadfile%(\"(.-)\"%)")
      end
      -- The bytecode was made from the checkout's sources (its chunk names say where files are):
      -- a copy runs its own sources ...
      local real = stdlib.realpath(tree)
      assert.equal(real .. "/lua/ljleak/engine/boot.lua", boot())
      -- ... until its bytecode is made from them (the stamp names their folder) ...
      local stamp_time = lfs.attributes(tree .. "/build/lua/.stamp", "modification")
      write_file(tree .. "/build/lua/.stamp", real .. "/lua\n")
      assert(lfs.touch(tree .. "/build/lua/.stamp", stamp_time))
      assert.equal(real .. "/build/lua/ljleak/engine/boot.lua", boot())
      -- ... while argparse's source (the stamp's second line: its bytecode is there too) is not
      -- newer ...
      local argsrc = tree .. "/argparse.lua"
      write_file(argsrc, "")
      assert(lfs.touch(argsrc, stamp_time + 10))
      write_file(tree .. "/build/lua/.stamp", real .. "/lua\n" .. argsrc .. "\n")
      assert(lfs.touch(tree .. "/build/lua/.stamp", stamp_time))
      assert.equal(real .. "/lua/ljleak/engine/boot.lua", boot())
      assert(lfs.touch(argsrc, stamp_time - 10))
      assert.equal(real .. "/build/lua/ljleak/engine/boot.lua", boot())
      -- ... and while none of them is newer.
      assert(lfs.touch(tree .. "/lua/ljleak/util.lua", os.time() + 10))
      assert.equal(real .. "/lua/ljleak/engine/boot.lua", boot())
      h.rmtree(tree)
   end)
end)

describe("ljleak run with the tracker", function()
   local tracker = ROOT .. "/build/ljleak/libljleak.so"
   if not exists(tracker) then
      pending("needs build/ljleak/libljleak.so (make)")
      return
   end

   it("reports 100 bytes in 1 block definitely lost and fails with 42", function()
      local json = tmpdir .. "/new.json"
      local code, _, err = ljleak({"run", "--json=" .. json, "--", "luajit", "-e",
         'local ffi = require "ffi" ffi.cdef "void *malloc(size_t)" ffi.C.malloc(100)'})
      assert.equal(42, code, err)
      local data = cjson.decode(read_file(json))
      assert.same({blocks = 1, bytes = 100}, data.summary.definite)
      assert.equal("malloc", data.leaks[1].frames[1]["function"])
      assert.matches("definite: 100 bytes in 1 block, pid %d+", err)
      -- Overwriting an earlier report is allowed.
      code = ljleak({"run", "--json=" .. json, "--error-exitcode=7", "--", "luajit", "-e", "os.exit(3, true)"})
      assert.equal(3, code)
      assert.same({blocks = 0, bytes = 0}, cjson.decode(read_file(json)).summary.definite)
   end)
end)
