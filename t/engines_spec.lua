-- Every leak fixture in t/leak/ says in its header what the report must say, and this spec runs
-- each one under both engines and checks it. Header lines (`#` instead of `--` in a shell script):
--   -- expect: CHECK; CHECK...           under every engine it runs under
--   -- expect[ENGINE]: CHECK; CHECK...   under that engine only
--   -- engines: tracker (why)            the engines it runs under (default: tracker valgrind)
--   -- options[ENGINE]: OPTIONS          more ljleak options under that engine
-- CHECKs (KIND: definite, indirect, possible, reachable; FN: a function in the record's frames):
--   exit N                   ljleak's exit code
--   total KIND BLOCKS BYTES  the summary of that kind
--   one KIND [FN] [KEY=VALUE...]  exactly one record of that kind (naming FN, a pattern), and of it:
--                            bytes=N, alloc=FN (its first frame), file=PATTERN line=N object=PATTERN
--                            at=N (FN's frame: its file, line, object, position), inlined=1|0 (FN's
--                            frame is a function inlined at the call, or not), lua=N (its first
--                            Lua frame's line), calls=FN (also in its frames), in_child=1 (its
--                            process is a child of another process of the report)
--   some KIND [FN] [bytes=N] [alloc=FN] [KEY=VALUE...]  at least one record of that kind with those
--                            bytes and first frame (naming FN); the other keys of the first one
--   records KIND FN N        N records of that kind naming FN
--   none KIND FN             no record of that kind names FN
--   blocks KIND FN N         the blocks of the records of that kind naming FN
--   alloc_all KIND FN        every record of that kind was allocated by FN
--   pids KIND N              N records of that kind, each of another process
--   pids_all N               the records are of N processes
--   processes N              N processes in the report
--   lua_state STATE          the first process's Lua state at exit
--   clean                    no record or error left unsuppressed
--   jit_stacks KIND N        more than N records of that kind whose second frame is in no object
-- Every report also names the engine and the command it ran.
local cjson = require "cjson"
local lfs = require "lfs"
local h = require "t.helper"

local ENGINES = {"tracker", "valgrind"}
local only = os.getenv("LJLEAK_TEST_ENGINES")   -- e.g. "tracker": those engines only (make test's clang build)
if only and only ~= "" then
   local list = {}
   for e in only:gmatch("[^,]+") do list[#list + 1] = e end
   ENGINES = list
end

-- Fixtures that need arguments or an engine's own conditions are driven by their own specs.
local DRIVEN = {
   ["exit_paths.lua"] = "t/hostile_spec.lua", ["many_sites.lua"] = "t/hostile_spec.lua",
   ["lua_lines.lua"] = "t/supp_run_spec.lua", ["vg_errors.lua"] = "t/valgrind_spec.lua",
   ["vg_segv.lua"] = "t/valgrind_spec.lua", ["vg_problems.sh"] = "t/valgrind_spec.lua",
   ["vg_pid_namespaces.sh"] = "t/valgrind_spec.lua",
   ["leaky.lua"] = "every fixture (it loads t/leak/libleaky.c's library)",
}

-- The fixture NAME's header: {engines = {name = true}, options = {engine = {...}},
-- expect = {{engine = name or nil, check = "text"}...}}.
local function header(name)
   local text = assert(h.read_file(h.ROOT .. "/t/leak/" .. name))
   local c = name:match("%.sh$") and "#" or "%-%-"
   local fx = {engines = {}, options = {}, expect = {}}
   for line in text:gmatch("[^\n]*") do
      local tag, engine, rest = line:match("^" .. c .. " (%a+)%[?(%a*)%]?: (.*)$")
      if tag == "expect" then
         for check in rest:gmatch("[^;]+") do
            fx.expect[#fx.expect + 1] = {engine = engine ~= "" and engine or nil,
                                         check = (check:gsub("^%s+", ""):gsub("%s+$", ""))}
         end
      elseif tag == "engines" then
         for e in rest:gsub("%(.*", ""):gmatch("%a+") do fx.engines[e] = true end
      elseif tag == "options" then
         local opts = {}
         for o in rest:gmatch("%S+") do opts[#opts + 1] = o end
         fx.options[engine] = opts
      end
   end
   if next(fx.engines) == nil then
      fx.engines = {tracker = true, valgrind = true}
   end
   return fx
end

local function command(name)
   return name:match("%.sh$") and {"sh", "t/leak/" .. name} or {"luajit", "t/leak/" .. name}
end

local function unsuppressed(r)
   local n = 0
   for _, set in ipairs({r.leaks, r.errors or {}}) do
      for _, rec in ipairs(set) do
         if rec.suppressed_by == nil or rec.suppressed_by == cjson.null then n = n + 1 end
      end
   end
   return n
end

local function frame_of(rec, fn)
   for i, f in ipairs(rec.frames or {}) do
      if f["function"] == fn then return f, i end
   end
end

-- The records of KIND naming FN (a pattern: the whole function name), with bytes= and alloc= as KEYS say.
local function select(r, kind, fn, keys)
   local out = {}
   for _, rec in ipairs(r.leaks) do
      local named = not fn
      for _, f in ipairs(rec.frames or {}) do
         if fn and type(f["function"]) == "string" and f["function"]:match("^" .. fn .. "$") then named = true end
      end
      if rec.kind == kind and named and (not keys.bytes or rec.bytes == tonumber(keys.bytes))
            and (not keys.alloc or rec.frames[1]["function"] == keys.alloc) then
         out[#out + 1] = rec
      end
   end
   return out
end

-- Check what KEYS say of record REC (naming FN) in report R.
local function check_record(r, rec, fn, keys, what)
   if keys.bytes then assert.are.equal(tonumber(keys.bytes), rec.bytes, what) end
   if keys.alloc then assert.are.equal(keys.alloc, rec.frames[1]["function"], what) end
   if keys.file or keys.line or keys.object or keys.at or keys.inlined then
      local f, i = frame_of(rec, fn)
      assert.is_truthy(f, what)
      if keys.file then assert.matches(keys.file .. "$", f.file, 1, false, what) end
      if keys.line then assert.are.equal(tonumber(keys.line), f.line, what) end
      if keys.object then assert.matches(keys.object .. "$", f.object, 1, false, what) end
      if keys.at then assert.are.equal(tonumber(keys.at), i, what) end
      if keys.inlined then assert.are.equal(keys.inlined == "1", f.inlined == true, what) end
   end
   if keys.lua then assert.are.equal(tonumber(keys.lua), (rec.lua[1] or {}).line, what) end
   if keys.calls then assert.is_truthy(frame_of(rec, keys.calls), what) end
   if keys.in_child then
      local ppid
      for _, p in ipairs(r.processes) do
         if p.pid == rec.pid then ppid = p.ppid end
      end
      local parent = false
      for _, p in ipairs(r.processes) do
         if p.pid == ppid then parent = true end
      end
      assert.is_true(parent, what)
   end
end

local checks = {}

function checks.exit(j, n) assert.are.equal(tonumber(n), j.code, j.stderr) end

function checks.total(j, kind, blocks, bytes)
   assert.are.same({blocks = tonumber(blocks), bytes = tonumber(bytes)}, j.report.summary[kind])
end

local function records_check(at_least)
   return function(j, kind, ...)
      local fn, keys = nil, {}
      for _, a in ipairs({...}) do
         local k, v = a:match("^([%w_]+)=(.*)$")
         if k then keys[k] = v else fn = a end
      end
      local recs = select(j.report, kind, fn, at_least and keys or {})
      local what = ("%s %s %s"):format(kind, tostring(fn), table.concat({...}, " "))
      if at_least then
         assert.is_true(#recs >= 1, what)
      else
         assert.are.equal(1, #recs, what)
      end
      check_record(j.report, recs[1], fn, keys, what)
   end
end
checks.one = records_check(false)
checks.some = records_check(true)

function checks.records(j, kind, fn, n)
   assert.are.equal(tonumber(n), #select(j.report, kind, fn, {}), kind .. " " .. fn)
end

function checks.none(j, kind, fn)
   assert.are.equal(0, #h.records(j.report, kind, fn), kind .. " " .. fn)
end

function checks.blocks(j, kind, fn, n)
   assert.are.equal(tonumber(n), (h.total(j.report, kind, fn)))
end

function checks.alloc_all(j, kind, fn)
   local recs = h.records(j.report, kind)
   assert.is_true(#recs > 0)
   for _, rec in ipairs(recs) do assert.are.equal(fn, rec.frames[1]["function"]) end
end

function checks.pids(j, kind, n)
   local recs, seen, distinct = h.records(j.report, kind), {}, 0
   for _, rec in ipairs(recs) do
      if not seen[rec.pid] then distinct, seen[rec.pid] = distinct + 1, true end
   end
   assert.are.same({tonumber(n), tonumber(n)}, {#recs, distinct})
end

function checks.pids_all(j, n)
   local seen, distinct = {}, 0
   for _, rec in ipairs(j.report.leaks) do
      if not seen[rec.pid] then distinct, seen[rec.pid] = distinct + 1, true end
   end
   assert.are.equal(tonumber(n), distinct)
end

function checks.processes(j, n) assert.are.equal(tonumber(n), #j.report.processes) end

function checks.lua_state(j, state) assert.are.equal(state, j.report.processes[1].lua_state) end

function checks.clean(j) assert.are.equal(0, unsuppressed(j.report)) end

function checks.jit_stacks(j, kind, n)
   local count = 0
   for _, rec in ipairs(h.records(j.report, kind)) do
      if rec.frames[2] and rec.frames[2].object == nil then count = count + 1 end
   end
   assert.is_true(count > tonumber(n), count)
end

-- -- The fixtures ----------------------------------------------------------------------------

local fixtures = {}
for name in lfs.dir(h.ROOT .. "/t/leak") do
   if name:match("%.lua$") or name:match("%.sh$") then fixtures[#fixtures + 1] = name end
end
table.sort(fixtures)

describe("every leak fixture", function()
   it("says what its report must say, or which spec drives it", function()
      for _, name in ipairs(fixtures) do
         assert.is_true(DRIVEN[name] ~= nil or #header(name).expect > 0, name)
      end
   end)

   it("is read right by the header reader", function()
      local fx = header("aligned.lua")
      assert.are.same({tracker = true, valgrind = true}, fx.engines)
      assert.are.same({check = "total definite 2 712"}, fx.expect[1])
      assert.are.same({engine = "valgrind", check = "some definite leak_aligned bytes=512 alloc=memalign"},
                      fx.expect[#fx.expect])
      assert.are.same({tracker = true}, header("outlive.sh").engines)
      assert.are.same({valgrind = {"--jit=on"}}, header("jit_loop.lua").options)
   end)
end)

local have_valgrind = require("ljleak.engine.valgrind").find() ~= nil
local jobs = {}
for _, name in ipairs(fixtures) do
   if not DRIVEN[name] then
      local fx = header(name)
      for _, engine in ipairs(ENGINES) do
         if fx.engines[engine] and (engine ~= "valgrind" or have_valgrind) then
            local args = {"--engine=" .. engine}
            for _, o in ipairs(fx.options[engine] or {}) do args[#args + 1] = o end
            args[#args + 1] = "--"
            for _, a in ipairs(command(name)) do args[#args + 1] = a end
            local j = h.job(args)
            j.name, j.engine, j.fx = name, engine, fx
            jobs[#jobs + 1] = j
         end
      end
   end
end

describe("the leak fixtures under both engines", function()
   setup(function()
      local all = {}
      for i, j in ipairs(jobs) do all[i] = j end
      h.run_all(all)
   end)

   if not have_valgrind then pending("the Valgrind engine needs valgrind (apt-get install valgrind)") end
   for _, j in ipairs(jobs) do
      local texts = {}
      for _, e in ipairs(j.fx.expect) do
         if not e.engine or e.engine == j.engine then texts[#texts + 1] = e.check end
      end
      it(("%s under the %s: %s"):format(j.name, j.engine, table.concat(texts, "; ")), function()
         assert.is_truthy(j.report, j.stderr)
         assert.are.equal(j.engine, j.report.engine)
         assert.are.same(command(j.name), j.report.command)
         for _, text in ipairs(texts) do
            local words = {}
            for w in text:gsub("%s+%(.*%)$", ""):gmatch("%S+") do words[#words + 1] = w end
            local check = checks[words[1]]
            assert.is_truthy(check, "unknown check: " .. text)
            check(j, unpack(words, 2))
         end
      end)
   end
end)
