-- Baselines (--baseline, --update-baseline): a run fails only on leak sites that are not in the
-- baseline or grew beyond it, and says "N new, M fixed, K known"; sites keep their names when
-- lines move; bad baselines are refused before anything runs.
-- Run from the checkout: luajit /usr/bin/busted t/baseline_spec.lua
local cjson = require "cjson"
local h = require "t.helper"

local dir, env
before_each(function() dir, env = h.sites_dir() end)
after_each(function() h.rmtree(dir) end)

-- `ljleak ARGS... -- luajit sites.lua ACTIONS...` in DIR (t/ci/sites.lua copied there):
-- code, stderr, and the JSON report.
local function sites(args, actions)
   local argv = {h.BIN, "run", "--json=" .. dir .. "/r.json"}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   argv[#argv + 1] = "--"
   argv[#argv + 1] = "luajit"
   argv[#argv + 1] = "sites.lua"
   for _, a in ipairs(actions) do argv[#argv + 1] = a end
   os.remove(dir .. "/r.json")
   local code, _, err = h.run(argv, {cwd = dir, env = env})
   local text = h.read_file(dir .. "/r.json")
   return code, err, text and cjson.decode(text)
end

-- The sites a baseline list holds: {"KIND BLOCKS BYTES", SITE} per line, comments left out.
local function listed(path)
   local out = {}
   for line in h.read_file(path):gmatch("[^\n]+") do
      if not line:match("^#") then
         local kind, blocks, bytes, site = line:match("^(%a+)%s+(%d+)%s+(%d+)%s+(.-)$")
         out[#out + 1] = {("%s %s %s"):format(kind, blocks, bytes), site}
      end
   end
   return out
end

local PARSE = "malloc < sites.lua:parse < sites.lua:main chunk"
local RENDER = "malloc < sites.lua:render < sites.lua:main chunk"
local CACHE = "malloc < leak_malloc < sites.lua:cache < sites.lua:main chunk"

describe("a baseline", function()
   it("is written by --update-baseline, and then fails the run only on new and grown sites", function()
      local base = dir .. "/leaks.baseline"
      local code, err = sites({"--baseline=" .. base, "--update-baseline"}, {"parse=1", "cache=1", "render=1"})
      assert.are.equal(0, code, err)
      assert.matches("BASELINE: 3 new, 0 fixed, 0 known (" .. base .. ", rewritten)\n", err, 1, true)
      assert.matches("ljleak: wrote the baseline " .. base .. " (3 sites)\n", err, 1, true)
      assert.matches("^# ljleak baseline 1\n", h.read_file(base))
      assert.are.same({{"definite 1 300", CACHE}, {"definite 1 100", PARSE}, {"definite 1 200", RENDER}},
                      listed(base))   -- by site

      -- The same leaks: all known.
      local code2, err2, rep2 = sites({"--baseline=" .. base}, {"parse=1", "cache=1", "render=1"})
      assert.are.equal(0, code2, err2)
      assert.matches("\nBASELINE: 0 new, 0 fixed, 3 known (" .. base .. ")\n", err2, 1, true)
      assert.are.same({file = base, new = 0, fixed = 0, known = 3},
                      {file = rep2.baseline.file, new = rep2.baseline.new, fixed = rep2.baseline.fixed,
                       known = rep2.baseline.known})

      -- render grew, spill is new, cache is gone: 2 new (one grew), 1 fixed, 1 known.
      local code3, err3, rep3 = sites({"--baseline=" .. base}, {"parse=1", "render=2", "spill=1"})
      assert.are.equal(42, code3, err3)
      assert.matches("\nBASELINE: 2 new, 1 fixed, 1 known (" .. base .. ")\n"
         .. "  definite new, 400 bytes in 1 block: malloc < sites.lua:spill < sites.lua:main chunk\n"
         .. "  definite grew to 400 bytes in 2 blocks (baseline: 200 bytes in 1 block): " .. RENDER .. "\n"
         .. "  definite fixed (baseline: 300 bytes in 1 block): " .. CACHE .. "\n", err3, 1, true)
      local marks = {}
      for _, r in ipairs(rep3.leaks) do
         if r.kind == "definite" then marks[r.lua[1]["function"]] = r.baseline .. " " .. r.bytes end
      end
      assert.are.same({parse = "known 100", render = "new 400", spill = "new 400"}, marks)

      -- Fewer blocks than the baseline allows, one site gone: passes.
      local code4, err4 = sites({"--baseline=" .. base}, {"render=1"})
      assert.are.equal(0, code4, err4)
      assert.matches("\nBASELINE: 0 new, 2 fixed, 1 known (" .. base .. ")\n", err4, 1, true)

      -- --update-baseline takes the new state in; the next run is clean against it.
      assert.are.equal(0, (sites({"--baseline=" .. base, "--update-baseline"}, {"parse=1", "render=2", "spill=1"})))
      assert.are.same({{"definite 1 100", PARSE}, {"definite 2 400", RENDER},
                       {"definite 1 400", "malloc < sites.lua:spill < sites.lua:main chunk"}}, listed(base))
      assert.are.equal(0, (sites({"--baseline=" .. base}, {"parse=1", "render=2", "spill=1"})))
   end)

   it("keeps a site known when code above it moves its line", function()
      local base = dir .. "/leaks.baseline"
      local code, err, rep = sites({"--baseline=" .. base, "--update-baseline"}, {"parse=1"})
      assert.are.equal(0, code, err)
      local line = h.one(rep, "definite").lua[1].line
      -- Unrelated code added above parse(): its malloc is now 6 lines further down.
      local src = h.read_file(dir .. "/sites.lua")
      local moved = src:gsub("\nlocal function parse", "\n-- a comment\nlocal function unrelated()\n"
         .. "   return 1\nend\n\nlocal function parse", 1)
      h.write_file(dir .. "/sites.lua", moved)
      local code2, err2, rep2 = sites({"--baseline=" .. base}, {"parse=1"})
      assert.are.equal(line + 5, h.one(rep2, "definite").lua[1].line)
      assert.are.equal(0, code2, err2)
      assert.matches("\nBASELINE: 0 new, 0 fixed, 1 known (" .. base .. ")\n", err2, 1, true)
      -- A leak in another function is another site, wherever its line is.
      local code3, err3 = sites({"--baseline=" .. base}, {"parse=1", "render=1"})
      assert.are.equal(42, code3)
      assert.matches("\nBASELINE: 1 new, 0 fixed, 1 known", err3, 1, true)
   end)

   it("can be a saved JSON report, which --update-baseline rewrites as one", function()
      local saved = dir .. "/saved.json"
      assert.are.equal(42, (sites({"--json=" .. saved}, {"parse=2", "cache=1"})))
      local code, err, rep = sites({"--baseline=" .. saved}, {"parse=1", "cache=1", "render=1"})
      assert.are.equal(42, code)
      assert.matches("\nBASELINE: 1 new, 0 fixed, 2 known (" .. saved .. ")\n", err, 1, true)
      assert.are.same({new = 1, fixed = 0, known = 2},
                      {new = rep.baseline.new, fixed = rep.baseline.fixed, known = rep.baseline.known})
      assert.are.equal(0, (sites({"--baseline=" .. saved, "--update-baseline"}, {"render=1"})))
      local data = cjson.decode(h.read_file(saved))
      assert.are.same({blocks = 1, bytes = 200}, data.summary.definite)
      assert.are.equal(0, (sites({"--baseline=" .. saved}, {"render=1"})))
   end)

   it("gates `ljleak busted` on its sites, the tests then not failed in busted for a known leak", function()
      local base = dir .. "/busted.baseline"
      local spec = h.ROOT .. "/t/busted/blocks_spec.lua"
      local function busted(extra)
         local argv = {h.BIN, "busted"}
         for _, a in ipairs(extra) do argv[#argv + 1] = a end
         argv[#argv + 1] = "--"
         argv[#argv + 1] = spec
         return h.run(argv, {cwd = dir})
      end
      local code, out, err = busted({"--baseline=" .. base, "--update-baseline"})
      assert.are.equal(0, code, out .. err)
      local names = {}
      for _, l in ipairs(listed(base)) do names[#names + 1] = l[1] .. " " .. l[2] end
      assert.are.same({
         "definite 1 400 malloc < " .. spec .. ":? [an exposed block > leaks inside expose]",
         "definite 1 200 malloc < " .. spec .. ":? [an insulated block > leaks inside insulate]",
      }, names)
      local code2, out2, err2 = busted({"--baseline=" .. base})
      assert.are.equal(0, code2, out2 .. err2)
      assert.matches("\nBASELINE: 0 new, 0 fixed, 2 known", err2, 1, true)
      local code3 = busted({})   -- without the baseline: the leaking tests fail
      assert.are.equal(42, code3)
   end)
end)

describe("a bad baseline", function()
   local marker

   -- `ljleak run ARGS -- touch MARKER`: exit 2, one line "ljleak: MESSAGE", nothing run.
   local function refused(args, message)
      marker = dir .. "/ran"
      local argv = {h.BIN, "run"}
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      for _, a in ipairs({"--", "touch", marker}) do argv[#argv + 1] = a end
      local code, out, err = h.run(argv, {cwd = dir})
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal("ljleak: " .. message .. "\n", err)
      assert.is_nil(h.read_file(marker))
   end

   it("is refused with its file and line, before anything runs", function()
      local f = dir .. "/b.baseline"
      h.write_file(f, "# ljleak baseline 2\ndefinite 1 100 malloc\n")
      refused({"--baseline=" .. f}, "--baseline: " .. f .. ":1: baseline format 2; this ljleak reads format 1")
      h.write_file(f, "# ljleak baseline 1\n# a comment\ndefinite 1\n")
      refused({"--baseline=" .. f}, "--baseline: " .. f .. ':3: expected KIND BLOCKS BYTES SITE, found '
         .. '"definite 1"')
      h.write_file(f, "# ljleak baseline 1\n\nlost 1 100 malloc < f\n")
      refused({"--baseline=" .. f}, "--baseline: " .. f .. ":3: unknown leak kind 'lost' (use definite, indirect, "
         .. "possible, reachable)")
      h.write_file(f, "# ljleak baseline 1\ndefinite 1 -100 malloc < f\n")
      refused({"--baseline=" .. f}, "--baseline: " .. f .. ":2: BYTES must be a count (an integer >= 0), "
         .. "found '-100'")
      h.write_file(f, "my notes\n")
      refused({"--baseline=" .. f}, "--baseline: " .. f .. ':1: not an ljleak baseline (expected a JSON report, '
         .. 'or a list whose first line is "# ljleak baseline 1")')
      refused({"--baseline=" .. dir .. "/none"}, "--baseline: " .. dir .. "/none: cannot read it: No such file or "
         .. "directory")
   end)

   it("is refused when it is a report of another schema, or a truncated one", function()
      local f = dir .. "/b.json"
      assert.are.equal(42, (sites({"--json=" .. f}, {"parse=1"})))
      local data = cjson.decode(h.read_file(f))
      data.schema = 2
      h.write_file(f, cjson.encode(data))
      refused({"--baseline=" .. f}, "--baseline: " .. f .. ": report schema 2; this ljleak reads schema 1")
      data.schema = 1
      local text = cjson.encode(data)
      local cut = text:sub(1, 300):match("^(.*,)")   -- after a comma: not inside an escape
      h.write_file(f, cut)
      refused({"--baseline=" .. f}, ("--baseline: %s: the JSON ends early, at byte %d (a truncated file?)")
         :format(f, #cut))
   end)

   it("is created by --update-baseline (a missing or empty file), which needs --baseline", function()
      refused({"--update-baseline"}, "--update-baseline: also give --baseline=FILE, the baseline to write")
      refused({"--baseline=" .. dir, "--update-baseline"}, "--update-baseline=" .. dir .. ": is a directory")
      local f = dir .. "/empty.baseline"
      h.write_file(f, "")
      refused({"--baseline=" .. f}, "--baseline: " .. f .. ': empty; expected a JSON report, or a list whose first '
         .. 'line is "# ljleak baseline 1"')
      assert.are.equal(0, (sites({"--baseline=" .. f, "--update-baseline"}, {"parse=1"})))
      assert.are.same({{"definite 1 100", PARSE}}, listed(f))
   end)
end)
