-- Growth (issue 14): ljleak.stable and assert.stable in the program, with exact slopes and lines.
local cjson = require "cjson"
local h = require "t.helper"

local function printed(script)
   local _, code, err, out = h.ljleak_run({"luajit", script})
   local ok, res = pcall(cjson.decode, (out or ""):match("[^\n]*"))
   assert(ok, ("no JSON from %s (exit %s): %s"):format(script, tostring(code), tostring(err)))
   return res
end

describe("ljleak.stable", function()
   local res
   setup(function() res = printed("t/growth/cache.lua") end)

   it("flags a cache keeping one 96-byte block per call, at its line, slope within 5%", function()
      local c = res.cache
      assert.is_false(c.ok)
      assert.are.equal(1, c.n)
      assert.are.equal("t/growth/cache.lua", c.source)
      assert.are.equal(10, c.line)
      assert.are.equal("malloc", c.frame["function"])
      assert.is_true(math.abs(c.bytes_per_iteration - 96) <= 96 * 0.05, tostring(c.bytes_per_iteration))
      assert.is_true(math.abs(c.blocks_per_iteration - 1) <= 0.05, tostring(c.blocks_per_iteration))
      assert.is_true(c.fit > 0.99)
      assert.are.same({persistent = 1, released = 0}, c.generations)
      assert.are.equal(200, res.cached)
   end)

   it("flags a finalizer closure that keeps its own cdata alive", function()
      local c = res.closure
      assert.is_false(c.ok)
      assert.are.equal(1, c.n)
      assert.are.equal(14, c.line)
      assert.is_true(math.abs(c.bytes_per_iteration - 40) <= 40 * 0.05, tostring(c.bytes_per_iteration))
      assert.are.same({persistent = 1, released = 0}, c.generations)
   end)

   it("stays quiet on a transient-heavy loop, 20 runs in one process", function()
      local t = printed("t/growth/transient.lua")
      assert.are.same({alarms = 0, details = {}}, t)
   end)
end)

describe("memory kept by the allocator", function()
   it("is told apart from a leak: RSS grows, live bytes stay one block", function()
      local f = printed("t/growth/fragment.lua")
      assert.is_true(f.ok)
      assert.are.equal(0, f.n)
      assert.are.equal("allocator", f.verdict)
      assert.are.equal(3000, f.live)
      assert.are.equal(0, f.live_growth)
      assert.is_true(f.rss_growth >= 6 * 1024 * 1024, tostring(f.rss_growth))   -- 128 KiB an iteration
      assert.is_true(f.fordblks >= 6 * 1024 * 1024, tostring(f.fordblks))       -- free, kept in the arena
      assert.matches("while live tracked bytes stayed at 3000 bytes (+0): not a leak, memory kept by the "
         .. "allocator (arena ", f.message, 1, true)
      assert.matches("malloc_trim(0)", f.message, 1, true)
      assert.matches("M_MMAP_THRESHOLD", f.message, 1, true)
      assert.matches("M_ARENA_MAX", f.message, 1, true)
   end)
end)

describe("assert.stable", function()
   it("fails a growing cache with the site's line and slope, passes a loop that frees", function()
      local _, _, out, err = h.ljleak_busted({"-o", "TAP", "t/growth/assert_spec.lua"})
      assert.matches("ok 1 %- assert.stable fails on a growing cache", out)
      assert.matches("ok 2 %- assert.stable passes on a loop that frees", out)
      local msg = assert(err:match("MESSAGE<<(.-)>>"))
      assert.matches("Expected a stable live set, but:", msg, 1, true)
      assert.matches("growth: 96.0 bytes in 1.00 blocks per iteration (fit 1.00)", msg, 1, true)
      assert.matches("in Lua t/growth/assert_spec.lua:11", msg, 1, true)
   end)
end)

-- `ljleak soak --json=F ARGS...`: the decoded report (or nil), the exit code, stderr.
local function soak(args)
   local dir = h.tmpdir()
   local argv = {h.BIN, "soak", "--json=" .. dir .. "/report.json"}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   local code, _, err = h.run(argv)
   local text = h.read_file(dir .. "/report.json")
   h.rmtree(dir)
   return text and cjson.decode(text), code, err
end

describe("ljleak soak --lua", function()
   it("fails on a function that keeps a block per call, with a growth record at its line", function()
      local r, code = soak({"--lua=t.growth.app.handle"})
      assert.are.equal(42, code)
      assert.are.equal(1, #r.growth)
      local g = r.growth[1]
      assert.are.equal("growth", g.kind)
      assert.are.equal(200, g.blocks)
      assert.are.equal(19200, g.bytes)
      assert.are.same({source = "./t/growth/app.lua", line = 9}, {source = g.lua[1].source, line = g.lua[1].line})
      assert.is_true(math.abs(g.bytes_per_iteration - 96) <= 96 * 0.05)
      assert.are.equal("malloc", g.frames[1]["function"])
      assert.are.same({target = "t.growth.app.handle", iterations = 200, warmup = 20},
         {target = r.soak.target, iterations = r.soak.iterations, warmup = r.soak.warmup})
      assert.are.equal(200, #r.soak.processes[1].memory.live)
      assert.are.equal(0, r.summary.definite.blocks)
      assert.are.same({exit_code = 42, why = "1 site growing with each iteration (soak) (--error-exitcode)",
                       fail_on = {"definite", "growth"}}, r.verdict)
   end)

   it("is judged again by `ljleak report` as the run judged it", function()
      local dir = h.tmpdir()
      h.run({h.BIN, "soak", "--lua=t.growth.app.handle", "--iterations=40", "--json=" .. dir .. "/r.json"})
      local code, out = h.run({h.BIN, "report", dir .. "/r.json"})
      local code2 = h.run({h.BIN, "report", "--fail-on=definite", dir .. "/r.json"})
      h.rmtree(dir)
      assert.are.equal(42, code)
      assert.matches("GROWTH: 1 site growing over 40 iterations of t.growth.app.handle (4 left out as warmup)",
         out, 1, true)
      assert.are.equal(0, code2)
   end)

   it("passes a function that frees what it allocates; growth can be left out of --fail-on", function()
      local r, code = soak({"--lua=t.growth.app.quiet", "--iterations=50"})
      assert.are.equal(0, code)
      assert.are.same({}, r.growth)
      local _, code2 = soak({"--lua=t.growth.app.handle", "--iterations=50", "--fail-on=definite"})
      assert.are.equal(0, code2)
   end)

   it("refuses bad options with one line and exit 2", function()
      for _, case in ipairs {
         {{"--lua=t.growth.app.handle", "--url=http://127.0.0.1:1/"},
          "give one of --lua=MODULE.FUNCTION and --url=URL"},
         {{"--url=http://example.com/", "--", "nginx"}, "only loopback addresses"},
         {{"--lua=t.growth.app.handle", "--iterations=10"}, "--iterations=10: must be an integer >= 16"},
         {{"--lua=t.growth.app.handle", "--warmup=195"}, "--warmup=195 leaves fewer than 8 of the 200 iterations"},
         {{"--lua=nodots"}, "--lua=nodots: expected MODULE.FUNCTION"},
         {{"--lua=t.growth.app.handle", "--engine=valgrind"}, "soak: --engine=valgrind cannot count live blocks"},
      } do
         local argv = {h.BIN, "soak"}
         for _, a in ipairs(case[1]) do argv[#argv + 1] = a end
         local code, _, err = h.run(argv)
         assert.are.equal(2, code, err)
         assert.matches(case[2], err, 1, true)
      end
   end)

   it("says which function is missing, and fails", function()
      local code, _, err = h.run({h.BIN, "soak", "--lua=t.growth.app.nofn"})
      assert.are.equal(2, code)
      assert.matches("ljleak soak: --lua=t.growth.app.nofn: module t.growth.app has no function nofn\n", err, 1, true)
   end)
end)

describe("the HTML report of a soak", function()
   it("plots live bytes and RSS per iteration, the growing site highlighted, as well-formed SVG", function()
      local dir = h.tmpdir()
      local code = h.run({h.BIN, "soak", "--lua=t.growth.app.handle", "--iterations=40", "--warmup=4",
                          "--html=" .. dir .. "/r.html"})
      local page = h.read_file(dir .. "/r.html")
      h.rmtree(dir)
      assert.are.equal(42, code)
      assert.matches("<h2>Growth: t.growth.app.handle, 40 iterations (4 warmup)</h2>", page, 1, true)
      local svg = assert(page:match('<svg xmlns="http://www.w3.org/2000/svg" class="growth%-plot".-</svg>'))
      local p = require("lxp").new({})
      assert.is_truthy(p:parse(svg) and p:parse())   -- well-formed
      p:close()
      local lines = {}
      for class, pts, title in svg:gmatch('<polyline class="(%a+)"[^>]- points="([^"]*)"><title>([^<]*)</title>') do
         local n = 0
         for _ in pts:gmatch("%S+") do n = n + 1 end
         lines[class] = {points = n, title = title}
      end
      assert.are.equal(40, lines.live.points)
      assert.are.equal(40, lines.rss.points)
      assert.are.same({points = 40, title = "./t/growth/app.lua:9: 96.0 bytes per iteration"}, lines.site)
      assert.matches('<rect class="warmup"', svg, 1, true)
      assert.matches("96.0 bytes, 1.00 blocks per iteration (fit 1.00) at ./t/growth/app.lua:9", page, 1, true)
   end)
end)

describe("ljleak soak --url", function()
   local nginx = require "t.nginx"
   if not nginx.available() then
      pending("Debian's nginx with the Lua module is not installed")
      return
   end

   it("flags a location that appends to a module-level table per request, at the handler's line", function()
      local r, code, err = nginx.soak("/grow", {"--iterations=100"})
      assert.are.equal(42, code, err)
      assert.are.equal(1, #r.growth)
      local g = r.growth[1]
      assert.are.equal(100, g.blocks)
      assert.are.equal(6400, g.bytes)
      assert.is_true(math.abs(g.bytes_per_iteration - 64) <= 64 * 0.05)
      assert.are.same({source = h.ROOT .. "/t/growth/nginx_app.lua", line = 11, ["function"] = "grow"}, g.lua[1])
      assert.are.equal("malloc", g.frames[1]["function"])
      assert.are.equal(100, #r.soak.processes[1].memory.live)
      assert.matches("GROWTH: 1 site growing over 100 iterations of http://127.0.0.1:%d+/grow", err)
   end)

   it("stays quiet on a location that frees what it allocates", function()
      local r, code, err = nginx.soak("/quiet", {"--iterations=100"})
      assert.are.equal(0, code, err)
      assert.are.same({}, r.growth)
      assert.are.equal(1, #r.soak.processes)
   end)
end)
