-- JUnit XML that CI reports track over time: valid for Jenkins' junit-10.xsd and Ant's JUnit.xsd
-- (t/junit/, checked with xmllint), one test case per busted test or per leak site, named the same
-- from run to run, with file, line, time, timestamp and hostname.
-- Run from the checkout: luajit /usr/bin/busted t/junit_spec.lua
local lxp = require "lxp"
local h = require "t.helper"

local SCHEMAS = {h.ROOT .. "/t/junit/junit-10.xsd", h.ROOT .. "/t/junit/ant-junit.xsd"}
local LEAKY = h.ROOT .. "/build/t/leak/libleaky.so"

local dir
before_each(function() dir = h.tmpdir() end)
after_each(function() h.rmtree(dir) end)

-- The element tree of XML TEXT: {name, attrs, children, text}.
local function parse_xml(text)
   local root = {children = {}}
   local stack = {root}
   local parser = lxp.new({
      StartElement = function(_, name, attrs)
         local e = {name = name, attrs = attrs, children = {}, text = ""}
         table.insert(stack[#stack].children, e)
         stack[#stack + 1] = e
      end,
      EndElement = function() stack[#stack] = nil end,
      CharacterData = function(_, s) stack[#stack].text = stack[#stack].text .. s end,
   })
   assert(parser:parse(text))
   assert(parser:parse())
   parser:close()
   return root.children[1]
end

-- The test cases of a JUnit file: {classname, name, file, line, time, failure = {type, message,
-- text}, skipped = message}, in order; and its testsuite's attributes.
local function cases(path)
   local suites = parse_xml(assert(h.read_file(path), path))
   assert.are.equal("testsuites", suites.name)
   local suite = suites.children[1]
   local list = {}
   for _, e in ipairs(suite.children) do
      if e.name == "testcase" then
         local c = {classname = e.attrs.classname, name = e.attrs.name, file = e.attrs.file,
                    line = tonumber(e.attrs.line), time = tonumber(e.attrs.time)}
         for _, x in ipairs(e.children) do
            if x.name == "failure" then c.failure = {type = x.attrs.type, message = x.attrs.message, text = x.text} end
            if x.name == "skipped" then c.skipped = x.attrs.message end
         end
         list[#list + 1] = c
      end
   end
   return list, suite.attrs
end

-- xmllint's verdict on PATH against each schema: the lines of its complaints ("" when valid).
local function validate(path)
   local out = {}
   for _, xsd in ipairs(SCHEMAS) do
      local code, _, err = h.run({"xmllint", "--noout", "--schema", xsd, path}, {env = h.UNTRACED})
      if code == 0 then
         assert.are.equal(path .. " validates\n", err)
      else
         out[#out + 1] = err
      end
   end
   return table.concat(out)
end

local function ljleak(args, opts)
   local argv = {h.BIN}
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   return h.run(argv, opts)
end

-- `ljleak run --junit=DIR/NAME.xml EXTRA... -- luajit t/ci/sites.lua ACTIONS...` -> the file, code.
local function sites(name, actions, extra)
   local path = ("%s/%s.xml"):format(dir, name)
   local args = {"run", "--junit=" .. path}
   for _, a in ipairs(extra or {}) do args[#args + 1] = a end
   for _, a in ipairs({"--", "luajit", "t/ci/sites.lua"}) do args[#args + 1] = a end
   for _, a in ipairs(actions) do args[#args + 1] = a end
   local code = ljleak(args, {env = {LJLEAK_LEAKY_LIB = LEAKY}})
   return path, code
end

describe("JUnit XML", function()
   it("validates against junit-10.xsd and Ant's JUnit.xsd with --junit-strict: clean, busted, errors", function()
      -- `ljleak ARGS[1] --junit=DIR/NAME.xml --junit-strict ARGS[2...]`: the file, its cases and suite.
      local function strict(name, args, code)
         local path = dir .. "/" .. name .. ".xml"
         local argv = {args[1], "--junit=" .. path, "--junit-strict"}
         for i = 2, #args do argv[#argv + 1] = args[i] end
         assert.are.equal(code, (ljleak(argv)), name)
         assert.are.equal("", validate(path), name)
         local list, suite = cases(path)
         local names = {}
         for _, c in ipairs(list) do
            assert.is_nil(c.file)
            names[#names + 1] = c.classname .. " | " .. c.name .. (c.failure and " | " .. c.failure.type or "")
         end
         return names, suite
      end
      local names, suite = strict("clean", {"run", "--", "luajit", "-e", "require 'ffi'"}, 0)
      assert.are.same({"ljleak | leak check"}, names)
      assert.are.same({"1", "0"}, {suite.tests, suite.failures})
      local _, busted_suite = strict("busted", {"busted", "--", "t/busted/leaky_spec.lua"}, 42)
      assert.are.same({"8", "4", "2"}, {busted_suite.tests, busted_suite.failures, busted_suite.skipped})
      names = strict("errors", {"run", "--", "luajit", "t/api/registry.lua"}, 42)
      local errors = {}
      for _, n in ipairs(names) do
         if n:match("^ljleak%.errors") then errors[#errors + 1] = n end
      end
      assert.are.same({   -- the two bad frees of one site are one case
         "ljleak.errors | double_finalizer at t/api/registry.lua:? | double_finalizer",
         "ljleak.errors | bad_free at t/api/registry.lua:main chunk | bad_free",
         "ljleak.errors | finalizer_error at t/api/registry.lua:main chunk | finalizer_error",
         "ljleak.errors | finalizer_self_reference at t/api/registry.lua:main chunk | finalizer_self_reference",
      }, errors)
      names = strict("unchecked", {"run", "--fail-on=indirect,unchecked", "--", "sh", "-c",
                                   "luajit t/leak/malloc_dropped.lua; exec build/t/prog/static_hello"}, 42)
      assert.are.same({"ljleak | unchecked processes | unchecked"}, names)
      local path = sites("sites", {"parse=1", "cache=1"}, {"--junit-strict"})
      assert.are.equal("", validate(path))
      local list = cases(path)
      assert.are.equal(2, #list)
      assert.is_nil(list[1].file)
      -- With the locations: the two attributes neither schema allows, and nothing else.
      local path2 = sites("located", {"parse=1", "cache=1"})
      local complaints = validate(path2)
      local n = 0
      for line in complaints:gmatch("[^\n]+") do
         if line:match("validity error") then
            n = n + 1
            local attr = line:match("Element 'testcase', attribute '(%a+)': The attribute '%a+' is not allowed%.$")
            assert.is_truthy(attr == "file" or attr == "line", line)
         else
            assert.are.equal(path2 .. " fails to validate", line)
         end
      end
      assert.are.equal(8, n)   -- 2 schemas x 2 test cases x (file, line)
   end)

   it("names a test case by its site's signature: the same in every run, no sizes, addresses or pids", function()
      local a = sites("a", {"parse=1", "cache=1", "render=1"})
      local b = sites("b", {"render=3", "parse=2", "cache=1"})
      local names = {}
      for _, path in ipairs({a, b}) do
         local list = {}
         for _, c in ipairs(cases(path)) do
            list[#list + 1] = c.classname .. " | " .. c.name
            assert.is_nil(c.name:find("%d"), c.name)   -- no number at all: no size, address, pid or line
         end
         table.sort(list)
         names[#names + 1] = list
      end
      assert.are.same({
         "ljleak.definite | malloc < leak_malloc < t/ci/sites.lua:cache < t/ci/sites.lua:main chunk",
         "ljleak.definite | malloc < t/ci/sites.lua:parse < t/ci/sites.lua:main chunk",
         "ljleak.definite | malloc < t/ci/sites.lua:render < t/ci/sites.lua:main chunk",
      }, names[1])
      assert.are.same(names[1], names[2])
      local list = cases(b)
      local render = list[1]   -- the biggest first
      assert.are.same({"ljleak.definite", "t/ci/sites.lua", 16, "definite", "definite leak: 600 bytes in 3 blocks"},
                      {render.classname, render.file, render.line, render.failure.type, render.failure.message})
      assert.matches("definite: 600 bytes in 3 blocks, pid %d+\n    at malloc %[[^\n]*\n"
         .. "    in Lua t/ci/sites%.lua:16 %(render%)\n    in Lua t/ci/sites%.lua:%d+ %(main chunk%)\n"
         .. "    %(%d+ frames folded", render.failure.text)
      local cache = list[2]
      assert.are.same({"malloc < leak_malloc < t/ci/sites.lua:cache < t/ci/sites.lua:main chunk", "t/ci/sites.lua", 18},
                      {cache.name, cache.file, cache.line})
   end)

   it("puts at most 10 records of a site in its failure, and says how many more", function()
      -- t/leak/stacks: 20 blocks of 8 * (1 + i) bytes, each its own stack, all one site (a recursion)
      local path = dir .. "/stacks.xml"
      assert.are.equal(42, (ljleak({"run", "--junit=" .. path, "--", h.ROOT .. "/build/t/leak/stacks", "20"})))
      local list = cases(path)
      assert.are.same({"malloc < step < pad < main", "definite leak: 1680 bytes in 20 blocks"},
                      {list[1].name, list[1].failure.message})
      local n = 0
      for _ in list[1].failure.text:gmatch("\ndefinite: ") do n = n + 1 end
      assert.are.equal(9, n)   -- (the first is at the start)
      assert.matches("^definite: 160 bytes in 1 block, pid %d+\n", list[1].failure.text)
      local tail = "\n... and 10 more records (440 bytes in 10 blocks); see the JSON report\n"
      assert.are.equal(tail, list[1].failure.text:sub(-#tail))
   end)

   it("gives the errors of one site one case, with at most 10 of them in its failure", function()
      local json = dir .. "/r.json"
      assert.are.equal(0, (ljleak({"run", "--json=" .. json, "--", "luajit", "-e", "require 'ffi'"})))
      local data = require("cjson").decode(h.read_file(json))
      data.errors = {}
      for i = 1, 12 do
         data.errors[i] = {kind = "bad_free", message = ("free of 0x%x that malloc never returned"):format(4096 * i),
                           pid = 7, lua = {{source = "app.lua", line = 30 + i, ["function"] = "close"}}}
      end
      h.write_file(json, require("cjson").encode(data))
      local path = dir .. "/errors.xml"
      assert.are.equal(42, (ljleak({"report", json, "--junit=" .. path})))
      local list = cases(path)
      assert.are.equal(1, #list)
      assert.are.same({"ljleak.errors", "bad_free at app.lua:close", "app.lua", 31},
                      {list[1].classname, list[1].name, list[1].file, list[1].line})
      local n = 0
      for _ in list[1].failure.text:gmatch("error: bad_free, pid 7\n") do n = n + 1 end
      assert.are.equal(10, n)
      assert.matches("\n... and 2 more errors; see the JSON report\n$", list[1].failure.text)
      assert.matches("; and 2 more errors$", list[1].failure.message)
   end)

   it("has a test case per busted test (pending: skipped; namesakes: apart), and one per site of no test",
      function()
      local path = dir .. "/busted.xml"
      local code = ljleak({"busted", "--junit=" .. path, "--", "t/busted/leaky_spec.lua"})
      assert.are.equal(42, code)
      local list, suite = cases(path)
      local got = {}
      for _, c in ipairs(list) do
         got[#got + 1] = {c.classname, c.name, c.file, c.line,
                          c.failure and c.failure.message or c.skipped and "skipped: " .. c.skipped or "passed"}
         assert.is_true(c.time >= 0 and c.time < 5, c.name)
      end
      local spec = "t/busted/leaky_spec.lua"
      assert.are.same({
         {"t.busted.leaky_spec", "parser > parses small input", spec, 11, "passed"},
         {"t.busted.leaky_spec", "parser > handles huge input", spec, 15, "definite leak: 4096 bytes in 1 block"},
         {"t.busted.leaky_spec", "parser > with a cache > hits", spec, 27, "definite leak: 300 bytes in 1 block"},
         {"t.busted.leaky_spec", "parser > leaks and fails", spec, 32, "definite leak: 77 bytes in 1 block"},
         {"t.busted.leaky_spec", "parser > is not written yet", spec, 37, "skipped: pending"},
         {"t.busted.leaky_spec", "parser > stops half way", spec, 39, "skipped: pending"},
         {"t.busted.leaky_spec", "parser > parses small input", spec, 45, "passed"},
         {"ljleak.definite", "malloc < t/busted/leaky_spec.lua:main chunk [t/busted/leaky_spec.lua]", spec, 7,
          "definite leak: 11 bytes in 1 block"},
      }, got)
      assert.matches("in Lua t/busted/leaky_spec.lua:16", list[2].failure.text, 1, true)
      assert.matches("in Lua t/busted/leaky_spec.lua:23", list[3].failure.text, 1, true)   -- its before_each
      assert.are.same({"ljleak", "8", "4", "0", "2"},
                      {suite.name, suite.tests, suite.failures, suite.errors, suite.skipped})
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d$", suite.timestamp)
      assert.matches("^%d+%.%d%d%d$", suite.time)
      assert.are.equal(require("posix.sys.utsname").uname().nodename, suite.hostname)
   end)

   it("skips a site the baseline accepts, and passes one it lists that is gone", function()
      local base = dir .. "/b.baseline"
      local _, code = sites("base", {"parse=1", "cache=1"}, {"--baseline=" .. base, "--update-baseline"})
      assert.are.equal(0, code)
      local path, code2 = sites("now", {"parse=1", "render=1"}, {"--baseline=" .. base})
      assert.are.equal(42, code2)
      local got = {}
      for _, c in ipairs(cases(path)) do
         got[#got + 1] = {c.name, c.failure and c.failure.message or c.skipped or "passed"}
      end
      assert.are.same({
         {"malloc < t/ci/sites.lua:render < t/ci/sites.lua:main chunk", "definite leak: 200 bytes in 1 block"},
         {"malloc < t/ci/sites.lua:parse < t/ci/sites.lua:main chunk",
          "a known leak site, in the baseline " .. base .. ": 100 bytes in 1 block"},
         {"malloc < leak_malloc < t/ci/sites.lua:cache < t/ci/sites.lua:main chunk", "passed"},
      }, got)
      assert.are.equal("", validate((sites("strict", {"parse=1", "render=1"}, {"--baseline=" .. base,
                                                                               "--junit-strict"}))))
   end)
end)
