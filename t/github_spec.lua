-- GitHub Actions (GITHUB_ACTIONS=true, simulated): an `::error file=,line=::` annotation per failing
-- leak site at its Lua line (or C line) in the repository, and a Markdown step summary.
-- Run from the checkout: luajit /usr/bin/busted t/github_spec.lua
local h = require "t.helper"

local dir, sites_env
before_each(function()
   dir, sites_env = h.sites_dir()
   assert(require("lfs").mkdir(dir .. "/sub"))
end)
after_each(function() h.rmtree(dir) end)

-- `ljleak ARGS...` in CWD (default DIR) as a GitHub Actions step whose workspace is DIR.
local function step(args, cwd, env)
   local argv = {h.BIN}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   local e = {GITHUB_ACTIONS = "true", GITHUB_WORKSPACE = dir, GITHUB_STEP_SUMMARY = dir .. "/summary.md",
              LJLEAK_LEAKY_LIB = sites_env.LJLEAK_LEAKY_LIB}
   for k, v in pairs(env or {}) do e[k] = v end
   return h.run(argv, {cwd = cwd or dir, env = e})
end

-- The workflow command lines of TEXT, each cut before its message's first "%0A" (what follows
-- holds a pid).
local function commands(text)
   local out = {}
   for line in text:gmatch("[^\n]+") do
      if line:match("^::") then out[#out + 1] = line:match("^(.-)%%0A") or line end
   end
   return out
end

local TITLE = "title=ljleak%3A definite leak%2C "

describe("under GitHub Actions", function()
   it("annotates each failing site at its Lua line, in the repository, and sums up the step", function()
      -- run from a subfolder: the paths are the repository's, not the working directory's
      local code, out = step({"run", "--", "luajit", "../sites.lua", "parse=1", "cache=2"}, dir .. "/sub")
      assert.are.equal(42, code)
      assert.are.same({
         "::error file=sites.lua,line=18," .. TITLE .. "600 bytes in 2 blocks::site: malloc < leak_malloc < "
            .. "../sites.lua:cache < ../sites.lua:main chunk",
         "::error file=sites.lua,line=15," .. TITLE .. "100 bytes in 1 block::site: malloc < ../sites.lua:parse < "
            .. "../sites.lua:main chunk",
      }, commands(out))
      -- the message is the readable report, its newlines escaped
      assert.matches("main chunk%%0Adefinite: 600 bytes in 2 blocks, pid %d+%%0A    at malloc %[[^%%]*%%0A"
                     .. "    by leak_malloc %(libleaky%.c:17%) %[[^%%]*%%0A"
                     .. "    in Lua %.%./sites%.lua:18 %(cache%)%%0A", out)
      -- the message ends there
      assert.matches("frames folded: LuaJIT's VM down to main; the JSON report has them%)\n", out)
      local summary = h.read_file(dir .. "/summary.md")
      assert.matches("^### ljleak: 2 leak sites and 0 errors fail the run\n\n`luajit ../sites.lua parse=1 cache=2`, "
         .. "engine tracker, exit status 0\n\n| kind | blocks | bytes |\n|%-%-%-|%-%-%-:|%-%-%-:|\n"
         .. "| definite | 3 | 700 |\n| indirect | 0 | 0 |\n", summary)
      assert.matches("| fails | definite | 2 | 600 | `malloc < leak_malloc < ../sites.lua:cache < ../sites.lua:main "
         .. "chunk` | ../sites.lua:18 |\n| fails | definite | 1 | 100 | `malloc < ../sites.lua:parse < ../sites.lua:"
         .. "main chunk` | ../sites.lua:15 |\n", summary, 1, true)
      -- a second step appends its own summary
      step({"run", "--", "luajit", "sites.lua", "tidy=1"})
      local summary2 = h.read_file(dir .. "/summary.md")
      assert.are.equal(summary, summary2:sub(1, #summary))
      assert.matches("\n### ljleak: no leak fails the run\n", summary2:sub(#summary), 1, true)
   end)

   it("annotates only the sites a baseline does not accept, and gives its counts", function()
      local base = dir .. "/b.baseline"
      local code, out = step({"run", "--baseline=" .. base, "--update-baseline", "--", "luajit", "sites.lua",
                              "parse=1", "cache=1"})
      assert.are.equal(0, code)
      assert.are.same({}, commands(out))
      local code2, out2 = step({"run", "--baseline=" .. base, "--", "luajit", "sites.lua", "parse=1", "render=1"})
      assert.are.equal(42, code2)
      assert.are.same({"::error file=sites.lua,line=16," .. TITLE .. "200 bytes in 1 block (not in the baseline)"
                       .. "::site: malloc < sites.lua:render < sites.lua:main chunk"}, commands(out2))
      local summary = h.read_file(dir .. "/summary.md")
      assert.matches("Baseline `" .. base .. "`: **1 new, 1 fixed, 1 known**\n", summary, 1, true)
      assert.matches("| new | definite | 1 | 200 | `malloc < sites.lua:render < sites.lua:main chunk` | "
         .. "sites.lua:16 |\n| known | definite | 1 | 100 | `malloc < sites.lua:parse < sites.lua:main chunk` | "
         .. "sites.lua:15 |\n",
         summary, 1, true)
   end)

   it("annotates a leak of C code at its C line", function()
      local code, out = step({"run", "--", h.ROOT .. "/build/t/leak/stacks", "1"}, h.ROOT,
                             {GITHUB_WORKSPACE = h.ROOT})
      assert.are.equal(42, code)
      assert.are.same({"::error file=t/leak/stacks.c,line=15," .. TITLE .. "8 bytes in 1 block::site: malloc < step "
                       .. "< pad < main"}, commands(out))
   end)

   it("annotates `ljleak report` re-gating a saved report, on stderr when a report goes to stdout", function()
      local json = dir .. "/r.json"
      step({"run", "--json=" .. json, "--", "luajit", "sites.lua", "parse=1"}, dir, {GITHUB_ACTIONS = "false"})
      assert.is_nil(h.read_file(dir .. "/summary.md"))   -- not under GitHub Actions: nothing
      local code, out = step({"report", json})
      assert.are.equal(42, code)
      local expect = {"::error file=sites.lua,line=15," .. TITLE .. "100 bytes in 1 block::site: malloc < "
                      .. "sites.lua:parse < sites.lua:main chunk"}
      assert.are.same(expect, commands(out))
      local code2, out2, err2 = step({"run", "--json=-", "--", "luajit", "sites.lua", "parse=1"})
      assert.are.equal(42, code2)
      assert.are.same({}, commands(out2))
      assert.are.same(expect, commands(err2))
      assert.are.equal(1, require("cjson").decode(out2).summary.definite.blocks)
   end)
end)
