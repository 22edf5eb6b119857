-- The tracker end to end beyond what each fixture's header says (t/engines_spec.lua runs those):
-- libraries really unloaded, the report files, exit statuses, clean programs.
local h = require "t.helper"

local one, only_definite = h.one, h.only_definite

describe("tracker", function()
   it("judges a library unloaded before exit as if it were loaded (real dlclose)", function()
      local env = {env = {LJLEAK_KEEP_MODULES = "0"}}
      local r, code = h.fixture("global_reachable", nil, env)
      assert.are.equal(0, code)
      only_definite(r, 0, 0)
      assert.are.equal(555, one(r, "reachable", "hold_in_global").bytes)  -- its global still a root
      local r2 = h.fixture("ffi_load", nil, env)
      only_definite(r2, 1, 123)
      one(r2, "definite", "leak_malloc")                                  -- its frames still named
   end)
end)

describe("report files", function()
   it("writes JUnit XML, HTML and folded stacks beside the JSON, and never over a user's file", function()
      local dir = h.tmpdir()
      local _, code = h.fixture("chain", {"--junit=" .. dir .. "/r.xml", "--html=" .. dir .. "/r.html",
                                          "--folded=" .. dir .. "/r.folded"})
      assert.are.equal(42, code)
      local xml = h.read_file(dir .. "/r.xml")
      assert.matches('<testsuite name="ljleak" tests="1" failures="1" errors="0" skipped="0" ', xml, 1, true)
      assert.matches('<testcase classname="ljleak.definite" name="malloc &lt; leak_chain &lt; t/leak/chain.lua:main '
         .. 'chunk" time="0.000" file="t/leak/chain.lua" line="4">', xml, 1, true)
      assert.matches('<failure type="definite" message="definite leak: 32 bytes in 1 block">', xml, 1, true)
      local html = h.read_file(dir .. "/r.html")
      assert.are.equal(require("ljleak.html").HEAD, html:sub(1, #require("ljleak.html").HEAD))
      assert.matches('<tr data-kind="definite"><td class="kind k-definite">definite</td><td class="num blocks">1</td>'
                     .. '<td class="num bytes">32</td></tr>', html, 1, true)   -- (t/html_spec.lua renders it)
      local folded = {}
      for line in h.read_file(dir .. "/r.folded"):gmatch("[^\n]+") do folded[#folded + 1] = line end
      assert.are.equal(2, #folded)
      -- the Lua frames (named), then the C frames Lua called: LuaJIT's VM and main left out
      assert.are.same({"definite;main chunk (t/leak/chain.lua:4);leak_chain (libleaky.c:154);malloc 32",
                       "indirect;main chunk (t/leak/chain.lua:4);leak_chain (libleaky.c:154);malloc 48"}, folded)
      -- an earlier report of the same kind is replaced; a file the user wrote is not
      local code2 = select(2, h.fixture("chain", {"--junit=" .. dir .. "/r.xml"}))
      assert.are.equal(42, code2)
      h.write_file(dir .. "/mine.xml", "<notes/>\n")
      local code3, _, err = h.run({h.BIN, "run", "--junit=" .. dir .. "/mine.xml", "--", "true"})
      assert.are.equal(2, code3)
      assert.matches("not overwriting it", err, 1, true)
      assert.are.equal("<notes/>\n", h.read_file(dir .. "/mine.xml"))
      h.rmtree(dir)
   end)
end)

describe("exit status", function()
   it("passes the command's status through when nothing leaked", function()
      local r, code = h.ljleak_run({"luajit", "-e", "os.exit(3)"})
      assert.are.equal(3, code)
      assert.are.equal(3, r.exit_status)
   end)

   it("is 128+signal when the command was killed", function()
      local r, code = h.ljleak_run({"luajit", "-e",
         "local ffi = require 'ffi' ffi.cdef 'int kill(int, int); int getpid(void);' " ..
         "ffi.C.kill(ffi.C.getpid(), 15)"})
      assert.are.equal(143, code)
      assert.is_truthy(r)
   end)

   it("is --error-exitcode when a leak was found", function()
      local _, code = h.fixture("ffi_load", {"--error-exitcode=7"})
      assert.are.equal(7, code)
   end)

   it("fails on the kinds named by --fail-on", function()
      local _, code = h.fixture("interior", {"--fail-on=definite,possible"})
      assert.are.equal(42, code)
   end)
end)

describe("clean programs", function()
   it("luajit -e 'require\"ffi\"' gives no record at all", function()
      local r, code = h.ljleak_run({"luajit", "-e", "require 'ffi'"})
      assert.are.equal(0, code)
      assert.are.same({}, r.leaks)
   end)

   it("a trivial busted spec gives no leak", function()
      local r, code = h.ljleak_run({"luajit", "/usr/bin/busted", "t/fixture/trivial_spec.lua"})
      assert.are.equal(0, code)
      for _, kind in ipairs {"definite", "indirect", "possible"} do
         assert.are.same({blocks = 0, bytes = 0}, r.summary[kind], kind)
      end
   end)
end)
