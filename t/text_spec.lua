-- busted spec for the text report people read: stacks folded below LuaJIT's VM (the JSON keeps
-- every frame), records ordered and numbered (definite ones, each followed by the indirect ones it
-- holds, then possible, then reachable), the records of a --fail-on kind always listed, the heap
-- summary and each process's command line, the error count. Runs Valgrind itself, so t/run.sh
-- runs it outside the tracker.
local h = require "t.helper"
local valgrind = require "ljleak.engine.valgrind"

local have_valgrind = valgrind.find() ~= nil
local ENGINES = {"tracker", "valgrind"}

-- The record headers of the text report TEXT (the lines "KIND: N bytes..."), with the pids as P.
local function headers(text)
   local out = {}
   for line in text:gmatch("[^\n]+") do
      if line:match("^%a+: %d+ bytes? in ") and line:match("%(loss record %d+ of %d+%)$") then
         out[#out + 1] = (line:gsub("pid %d+", "pid P"))
      end
   end
   return out
end

-- The lines of the record whose header starts with HEADER, up to the blank line after it.
local function record_lines(text, header)
   local out, inside = {}, false
   for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      if inside then
         if line == "" then break end
         out[#out + 1] = line
      elseif line:sub(1, #header) == header then
         inside = true
         out[1] = line
      end
   end
   return out
end

describe("the text report", function()
   local runs = {}
   setup(function()
      local jobs = {}
      for _, engine in ipairs(ENGINES) do
         if engine == "tracker" or have_valgrind then
            jobs[engine] = h.job({"--engine=" .. engine, "--", "luajit", "t/leak/order.lua"})
            jobs[engine .. "+reachable"] = h.job({"--engine=" .. engine, "--fail-on=definite,reachable", "--",
                                                  "luajit", "t/leak/order.lua"})
         end
      end
      h.run_all(jobs)
      runs = jobs
   end)

   it("shows the C frames above LuaJIT's VM, the Lua frames, then one line for the rest; the JSON has all",
      function()
      local j = runs.tracker
      assert.are.equal(42, j.code, j.stderr)
      local rec = h.one(j.report, "definite", "leak_malloc")
      local frames = rec.frames
      assert.are.same({"malloc", "leak_malloc", "main"},
                      {frames[1]["function"], frames[2]["function"], frames[#frames]["function"]})
      assert.matches("/luajit", frames[3].object)
      assert.are.same({
         ("definite: 16 bytes in 1 block, pid %d (loss record 3 of 4)"):format(rec.pid),
         ("    at malloc [%s/build/ljleak/libljleak.so]"):format(h.ROOT),
         "    by leak_malloc (libleaky.c:17) [build/t/leak/libleaky.so]",
         "    in Lua t/leak/order.lua:7 (main chunk)",
         ("    (%d frames folded: LuaJIT's VM down to main; the JSON report has them)"):format(#frames - 2),
      }, record_lines(j.stderr, "definite: 16 bytes"))
   end)

   it("lists the definite records, each followed by the indirect ones it holds, then possible; numbered",
      function()
      local j = runs.tracker
      assert.are.same({
         "definite: 32 bytes in 1 block (+48 bytes in 1 block indirect, below), pid P (loss record 1 of 4)",
         "indirect: 48 bytes in 1 block, held by loss record 1, pid P (loss record 2 of 4)",
         "definite: 16 bytes in 1 block, pid P (loss record 3 of 4)",
         "possible: 64 bytes in 1 block, pid P (loss record 4 of 4)",
      }, headers(j.stderr))
      -- the JSON in the same order, each record numbered, the indirect one naming its owner
      local got = {}
      for i = 1, 4 do
         local r = j.report.leaks[i]
         got[i] = {r.id, r.kind, r.bytes, r.owner}
      end
      assert.are.same({{1, "definite", 32}, {2, "indirect", 48, 1}, {3, "definite", 16}, {4, "possible", 64}}, got)
      for i, r in ipairs(j.report.leaks) do
         assert.are.equal(i, r.id)
         if i > 4 then assert.are.equal("reachable", r.kind) end
      end
      assert.matches("\nReachable blocks are not listed; rerun with --show-reachable", j.stderr, 1, true)
   end)

   it("under Valgrind, which does not say which definite record holds an indirect one, lists it after them",
      function()
      if not have_valgrind then return pending("needs valgrind") end
      local j = runs.valgrind
      assert.are.equal(42, j.code, j.stderr)
      assert.are.same({
         "definite: 32 bytes in 1 block, pid P (loss record 1 of 4)",
         "definite: 16 bytes in 1 block, pid P (loss record 2 of 4)",
         "indirect: 48 bytes in 1 block, pid P (loss record 3 of 4)",
         "possible: 64 bytes in 1 block, pid P (loss record 4 of 4)",
      }, headers(j.stderr))
   end)

   for _, engine in ipairs(ENGINES) do
      it("always lists the records of a --fail-on kind, under the " .. engine, function()
         if engine == "valgrind" and not have_valgrind then return pending("needs valgrind") end
         local j = runs[engine .. "+reachable"]
         assert.are.equal(42, j.code, j.stderr)
         local list = headers(j.stderr)
         assert.are.equal(5, #list)
         assert.are.equal("reachable: 555 bytes in 1 block, pid P (loss record 5 of 5)", list[5])
         assert.is_nil(j.stderr:find("rerun with --show-reachable", 1, true))
         assert.are.same({exit_code = 42, fail_on = {"definite", "reachable"},
                          why = "3 records of a --fail-on kind (definite,reachable): 603 bytes in 3 blocks "
                             .. "(--error-exitcode)"}, j.report.verdict)
         -- `ljleak report` lists them as the run did
         local dir = h.tmpdir()
         h.write_file(dir .. "/r.json", require("cjson").encode(j.report))
         local code, out = h.run({h.BIN, "report", dir .. "/r.json"})
         h.rmtree(dir)
         assert.are.equal(42, code)
         assert.are.same(list, headers(out))
      end)
   end
end)

describe("the heap summary", function()
   local HEAP = h.ROOT .. "/build/t/prog/heap"

   local function run(engine, args)
      local cmd = {HEAP}
      for _, a in ipairs(args) do cmd[#cmd + 1] = a end
      local r, code, err = h.ljleak_run(cmd, {"--engine=" .. engine})
      assert.are.equal(0, code, err)
      return r, err
   end

   for _, engine in ipairs(ENGINES) do
      it("counts what the program allocated, freed and kept, as Valgrind's does, under the " .. engine, function()
         if engine == "valgrind" and not have_valgrind then return pending("needs valgrind") end
         local base = run(engine, {"0", "0", "0"}).heap
         local r, err = run(engine, {"10", "7", "100"})
         local heap = r.heap
         -- 10 blocks (one of 50 bytes, then reallocated to 100: an allocation and a free more),
         -- 7 freed, 3 kept
         assert.are.same({in_use = {blocks = base.in_use.blocks + 3, bytes = base.in_use.bytes + 300},
                          allocs = base.allocs + 11, frees = base.frees + 8, allocated = base.allocated + 1050}, heap)
         assert.are.same(heap, r.processes[1].heap)
         assert.matches(("\nHEAP SUMMARY:\n    in use at exit: %d bytes in %d blocks\n  total heap usage: %d allocs, "
                         .. "%d frees, %d bytes allocated\n  pid %d: %s 10 7 100\n"):format(heap.in_use.bytes,
                         heap.in_use.blocks, heap.allocs, heap.frees, heap.allocated, r.processes[1].pid, HEAP),
                        err, 1, true)
         assert.are.same({HEAP, "10", "7", "100"}, r.processes[1].command)
      end)
   end

   it("names each process with its command line and totals", function()
      local r, code, err = h.ljleak_run({"sh", "t/leak/several.sh"})
      assert.are.equal(42, code, err)
      assert.are.equal(4, #r.processes)   -- the shell, dirname, and two luajit
      local commands = {}
      for _, p in ipairs(r.processes) do
         commands[#commands + 1] = table.concat(p.command, " ")
         local heap = p.heap
         assert.matches(("\n  pid %d: [^\n]+: %d bytes? in %d blocks? in use at exit; %d allocs?, %d frees?, "
                         .. "%d bytes? allocated\n"):format(p.pid, heap.in_use.bytes, heap.in_use.blocks, heap.allocs,
                         heap.frees, heap.allocated), err)
      end
      table.sort(commands)
      assert.are.same({"dirname t/leak/several.sh",
                       "luajit -e local ffi = require \"ffi\" ffi.cdef \"void *malloc(size_t);\" ffi.C.malloc(200)",
                       "luajit t/leak/malloc_dropped.lua", "sh t/leak/several.sh"}, commands)
      -- an argument with blanks is quoted
      assert.matches("\n  pid %d+: luajit %-e 'local ffi = require \"ffi\" ffi.cdef \"void %*malloc%(size_t%);\" "
                     .. "ffi.C.malloc%(200%)': ", err)
      local total = {0, 0, 0, 0, 0}
      for _, p in ipairs(r.processes) do
         local hp = p.heap
         total = {total[1] + hp.in_use.blocks, total[2] + hp.in_use.bytes, total[3] + hp.allocs, total[4] + hp.frees,
                  total[5] + hp.allocated}
      end
      assert.are.same({in_use = {blocks = total[1], bytes = total[2]}, allocs = total[3], frees = total[4],
                       allocated = total[5]}, r.heap)
   end)
end)

describe("the error count", function()
   it("is in the summary and the JSON", function()
      local r, code, err = h.ljleak_run({"luajit", "t/api/registry.lua"})
      assert.are.equal(42, code, err)
      local n, count = 0, 0
      for _, e in ipairs(r.errors) do
         if e.suppressed_by == nil or e.suppressed_by == require("cjson").null then
            n, count = n + 1, count + (e.count or 1)
         end
      end
      assert.is_true(n >= 3, err)
      assert.are.same({records = n, count = count}, r.summary.error_totals)
      assert.matches(("\nERROR SUMMARY: %d errors from %d records\n"):format(count, n), err, 1, true)
      local _, _, clean_err = h.ljleak_run({"luajit", "-e", ""})
      assert.matches("\nERROR SUMMARY: 0 errors\n", clean_err, 1, true)
   end)
end)
