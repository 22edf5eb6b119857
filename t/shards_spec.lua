-- Many machines, one verdict: `ljleak report merge` of shard reports equals one run over all the
-- shards, and `ljleak report FILE.json` re-gates a saved report with the exit codes of `run`.
-- Run from the checkout: luajit /usr/bin/busted t/shards_spec.lua
local cjson = require "cjson"
local h = require "t.helper"

package.path = h.ROOT .. "/lua/?.lua;" .. package.path
local site = require "ljleak.site"

local SITES = "t/ci/sites.lua"

local dir
before_each(function() dir = h.tmpdir() end)
after_each(function() h.rmtree(dir) end)

local function ljleak(args)
   local argv = {h.BIN}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   return h.run(argv)
end

local function read_json(path)
   return cjson.decode((assert(h.read_file(path), path)))
end

-- `ljleak run --json=DIR/NAME.json [EXTRA...] -- CMD...`: the report's path, and the exit code.
local function run(name, cmd, extra)
   local path = ("%s/%s.json"):format(dir, name)
   local args = {"run", "--json=" .. path}
   for _, a in ipairs(extra or {}) do args[#args + 1] = a end
   args[#args + 1] = "--"
   for _, a in ipairs(cmd) do args[#args + 1] = a end
   local code = ljleak(args)
   return path, code
end

-- What REPORT says of the luajit processes (ONLY: their pids), by site: "kind blocks bytes site"
-- lines (suppressed records too, marked), sorted; the suppressions used; the processes.
local function view(report)
   local luajit = {}
   for _, p in ipairs(report.processes) do
      if p.exe and p.exe:match("/luajit[^/]*$") then luajit[p.pid] = true end
   end
   local sites, nproc = {}, 0
   for _ in pairs(luajit) do nproc = nproc + 1 end
   for _, g in ipairs(site.group(report.leaks, function(r) return luajit[r.pid] end)) do
      local supp = g.records[1].suppressed_by
      sites[#sites + 1] = ("%s %d %d %s%s"):format(g.kind, g.blocks, g.bytes, g.site,
         supp and supp ~= cjson.null and " (suppressed)" or "")
   end
   table.sort(sites)
   local used = {}
   for _, u in ipairs(report.suppressions or {}) do
      used[u.name] = ("%d records, %d bytes"):format(u.records, u.bytes)
   end
   return {sites = sites, suppressions = used, processes = nproc}
end

describe("ljleak report merge", function()
   it("of two shards' reports gives what one run over both gives", function()
      local a, ca = run("a", {"luajit", SITES, "parse=2", "cache=1"})
      local b, cb = run("b", {"luajit", SITES, "render=1", "cache=2", "tidy=3"})
      assert.are.same({42, 42}, {ca, cb})
      -- One run over both: a shell running the two (its own records are left out of the view).
      local both = run("both", {"sh", "-c", ("luajit %s parse=2 cache=1; luajit %s render=1 cache=2 tidy=3")
         :format(SITES, SITES)})
      local all = dir .. "/all.json"
      local code, out, err = ljleak({"report", "merge", a, b, "-o", all})
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      assert.are.equal(("ljleak: merged 2 reports into %s: %d records, 2 processes\n"):format(all,
         #read_json(a).leaks + #read_json(b).leaks), err)
      local merged, one = read_json(all), read_json(both)
      assert.are.same(view(one), view(merged))
      assert.are.same({blocks = 6, bytes = 1300}, merged.summary.definite)   -- 2*100 + 3*300 + 200
      assert.are.same(one.summary.definite, merged.summary.definite)
      assert.are.same(one.summary.suppressed, merged.summary.suppressed)
      -- the suppression counts add up
      local sa, sb = read_json(a).suppressions[1], read_json(b).suppressions[1]
      assert.are.equal(merged.suppressions[1].records, sa.records + sb.records)
      assert.are.equal(merged.suppressions[1].bytes, sa.bytes + sb.bytes)
      assert.are.same({a, b}, {merged.shards[1].file, merged.shards[2].file})
      -- and its verdict is the one run's
      assert.are.equal(42, (ljleak({"report", all})))
      assert.are.equal(42, (ljleak({"report", both})))
   end)

   it("adds up the records of one process and site, and keeps errors, problems and processes", function()
      local a = run("a", {"luajit", SITES, "parse=1"})
      local data = read_json(a)
      data.errors = {{kind = "bad_free", message = "free of 0x10 that malloc never returned", pid = 7}}
      data.problems = {{pid = 8, file = "/tmp/x", message = "truncated"}}
      h.write_file(dir .. "/a2.json", cjson.encode(data))
      local all = dir .. "/all.json"
      assert.are.equal(0, (ljleak({"report", "merge", a, dir .. "/a2.json", "-o", all})))
      local merged = read_json(all)
      assert.are.equal(#data.leaks, #merged.leaks)   -- same pids and sites: added up
      local rec = h.one(merged, "definite")
      assert.are.same({2, 200}, {rec.blocks, rec.bytes})
      assert.are.equal(1, #merged.errors)
      assert.are.equal(1, #merged.problems)
      assert.are.equal(2, #merged.processes)
      -- the error fails the merged report
      local code, out = ljleak({"report", all, "--fail-on=indirect"})
      assert.are.equal(42, code)
      assert.matches("error: bad_free, pid 7", out, 1, true)
   end)

   it("refuses what is not a report, and writes over no user's file", function()
      local a = run("a", {"luajit", SITES, "parse=1"})
      h.write_file(dir .. "/notes.json", '{"my": "notes"}')
      local code, out, err = ljleak({"report", "merge", a, dir .. "/notes.json", "-o", dir .. "/all.json"})
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal(("ljleak: %s/notes.json: not an ljleak report (expected a JSON object with \"tool\": "
         .. "\"ljleak\")\n"):format(dir), err)
      local code2, _, err2 = ljleak({"report", "merge", a, a, "-o", dir .. "/notes.json"})
      assert.are.equal(2, code2)
      assert.matches("not overwriting it", err2, 1, true)
      assert.are.equal('{"my": "notes"}', h.read_file(dir .. "/notes.json"))
      -- without -o: the merged report on standard output
      local code3, out3 = ljleak({"report", "merge", a})
      assert.are.equal(0, code3)
      assert.are.equal(1, read_json(a).summary.definite.blocks)
      assert.are.same(read_json(a).summary, cjson.decode(out3).summary)
   end)
end)

describe("ljleak report FILE.json", function()
   it("gives the exit code `run` gave, by --fail-on, --error-exitcode and --baseline", function()
      local a, code = run("a", {"luajit", SITES, "parse=1", "cache=1"})
      assert.are.equal(42, code)
      assert.are.equal(42, (ljleak({"report", a})))
      assert.are.equal(0, (ljleak({"report", a, "--fail-on=indirect"})))   -- CMD's own status
      assert.are.equal(7, (ljleak({"report", a, "--error-exitcode=7"})))
      local base = dir .. "/b.baseline"
      assert.are.equal(0, (ljleak({"report", a, "--baseline=" .. base, "--update-baseline"})))
      local rcode, out = ljleak({"report", a, "--baseline=" .. base})
      assert.are.equal(0, rcode)
      assert.matches("\nBASELINE: 0 new, 0 fixed, 2 known (" .. base .. ")\n", out, 1, true)
      local b = run("b", {"luajit", SITES, "parse=1", "render=1"})
      local bcode, bout = ljleak({"report", b, "--baseline=" .. base})
      assert.are.equal(42, bcode)
      assert.matches("\nBASELINE: 1 new, 1 fixed, 1 known (" .. base .. ")\n", bout, 1, true)
      local s = ljleak({"run", "--baseline=" .. base, "--", "luajit", SITES, "parse=1", "render=1"})
      assert.are.equal(42, s)
   end)

   it("gives 124 for a run that timed out, 128+N for one killed by N, 2 when nothing was checked", function()
      local t, tcode = run("t", {"luajit", "-e", 'local ffi = require "ffi" ffi.cdef "void *malloc(size_t)" '
         .. 'ffi.C.malloc(10) ffi.cdef "int sleep(unsigned)" while true do ffi.C.sleep(1) end'}, {"--timeout=1"})
      assert.are.equal(124, tcode)
      assert.are.equal(124, (ljleak({"report", t})))
      local k, kcode = run("k", {"luajit", "-e", 'local ffi = require "ffi" '
         .. 'ffi.cdef "int kill(int, int); int getpid(void); void *malloc(size_t);" ffi.C.malloc(10) '
         .. "ffi.C.kill(ffi.C.getpid(), 15)"})
      assert.are.equal(143, kcode)
      assert.are.equal("SIGTERM", read_json(k).killed)
      assert.are.equal(143, (ljleak({"report", k})))
      local data = read_json(k)
      data.killed, data.exit_status = nil, 0
      h.write_file(dir .. "/k2.json", cjson.encode(data))
      assert.are.equal(2, (ljleak({"report", dir .. "/k2.json"})))   -- its one process unchecked
   end)
end)
