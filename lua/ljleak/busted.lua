-- busted integration: every allocation is tagged with the full name of the running test (its
-- before_each and after_each included; setup, teardown and file-level code with the file's
-- name), and, with per-test checks on, a test whose blocks are lost once it has run fails in
-- busted's own output with the leak report as its message.
--
-- Installed by itself under `ljleak run`/`ljleak busted` (the ljleak module wraps busted.core's
-- constructor); also usable as `busted --helper=ljleak.busted` and from a .busted file.
local ljleak = require "ljleak"
local vm = require "ljleak.vm"

-- Interpreted, every function of this module: the hooks run once or twice a test, and compiling
-- them cost more than it won (an empty test's hooks: 10.6 us compiled, 7.8 us not, 300 tests;
-- still 6.8 against 5.9 at 3000).
if jit then jit.off(true, true) end

local const = vm.require("ljleak.const")
local encode = vm.require("cjson").encode

local ENV = const.ENV
local io_open, getenv, getpid = io.open, vm.getenv, vm.ffi.C.getpid

local M = {}

local KIND_SET = {}
for k in (os.getenv(ENV.FAIL_ON) or "definite"):gmatch("[^,]+") do KIND_SET[k] = true end
local PER_TEST = os.getenv(ENV.PER_TEST) ~= "0"

-- "outer describe > inner describe > test", without the file.
local function full_name(core, element)
   local names = {element.name}
   local parent = core.context.parent(element)
   while parent and parent.descriptor ~= "file" and parent.descriptor ~= "suite" do
      if parent.name then table.insert(names, 1, parent.name) end
      parent = core.context.parent(parent)
   end
   return table.concat(names, " > ")
end

local function file_name(core, element)
   local f = element.descriptor == "file" and element or core.getFile(element)
   return f and f.name or nil
end

-- The leak records of a check that fail a test (the --fail-on kinds), and its problems.
local function failing(recs, problems)
   local out = {}
   for _, r in ipairs(recs) do
      if KIND_SET[r.kind] then out[#out + 1] = r end
   end
   return out, problems
end

-- -- Engines ----------------------------------------------------------------------------------
-- enter(name) starts a context (a test, a file) and returns its state; leave(state) ends it;
-- finish(state), once the test and its hooks ran, says (text) what they lost, or nil.

-- The tracker: tags, and a check of the blocks born since the test began. A context change at
-- each edge: the test's tag in a new epoch, then the tag before it in another (finish makes that
-- one, before its check; leave, when no check ran).
local tracker = {}
local context = ljleak.context

function tracker.enter(name)
   local old, epoch = context.begin(name)
   return {old = old, epoch = epoch}
end

function tracker.leave(st)
   if not st.hi then st.hi = context.finish(st.old) end
end

function tracker.finish(st)
   st.hi = context.finish(st.old)
   local recs, problems = failing(context.check(st.epoch, st.hi))
   if #recs == 0 and #problems == 0 then return nil end
   return ljleak.format(recs, problems)
end

-- Valgrind: a leak check (of what was lost since the last one) at each context's edges, and a
-- marker naming the context that follows; ljleak's XML reader gives each record its test.
local valgrind = {context = nil, definite = 0, possible = 0}

local function vg_check()
   collectgarbage()
   collectgarbage()
   local d, p = vm.vg_leak_check()
   local added_d, added_p = d - valgrind.definite, p - valgrind.possible
   valgrind.definite, valgrind.possible = d, p
   return added_d, added_p
end

function valgrind.enter(name)
   vg_check()  -- what was lost before belongs to the context before
   local st = {old = valgrind.context}
   valgrind.context = name
   vm.vg_mark("ljleak-context " .. (name or "-"))
   return st
end

function valgrind.leave(st)
   vg_check()
   valgrind.context = st.old
   vm.vg_mark("ljleak-context " .. (st.old or "-"))
end

function valgrind.finish()
   local d, p = vg_check()
   local lost = {}
   if KIND_SET.definite and d > 0 then lost[#lost + 1] = ("%d bytes definitely lost"):format(d) end
   if KIND_SET.possible and p > 0 then lost[#lost + 1] = ("%d bytes possibly lost"):format(p) end
   if #lost == 0 then return nil end
   return ("Valgrind found %s in this test; ljleak's report lists the records under its name\n")
      :format(table.concat(lost, " and "))
end

-- The failure text for a test's leaks, placed where busted shows a failure: the test's line.
local function leak_text(element, leaks)
   local text = "ljleak: the test leaked:\n" .. leaks
   local trace = element.trace
   if trace and trace.short_src then text = ("%s:%d: %s"):format(trace.short_src, trace.currentline or 0, text) end
   return text
end

-- Add the test ELEMENT (full name NAME, in the spec file FILE) that just ended with STATUS
-- (busted's: success, failure, error, pending) to the run's list of tests (under `ljleak run`,
-- LJLEAK_DIR/tests.PID.jsonl), for the JUnit report's test cases. The file stays open, line
-- buffered (a line a test, written whole); a forked child opens its own. The line is formatted
-- here, its strings encoded by cjson (a table encoded whole took five times as long: its number
-- through printf).
local TEST_LINE = '{"name":%s,"file":%s,"line":%s,"time":%s,"status":%s}\n'
local tests_file, tests_pid
local file_last, file_json   -- the last file's name, and it encoded
local function json_value(v)
   if v == nil then return "null" end
   if type(v) == "number" then return v == v and v ~= 1 / 0 and v ~= -1 / 0 and ("%.14g"):format(v) or "null" end
   return encode(v)
end
local function list_test(element, status, name, file)
   local pid = getpid()
   if tests_pid ~= pid then
      tests_pid = pid
      local dir = getenv(ENV.DIR)
      tests_file = dir and io_open(dir .. "/" .. const.TESTS_FILE:format(pid), "ab")
      if tests_file then tests_file:setvbuf("line") end
   end
   if not tests_file then return end
   local trace = element.trace
   file = file or (trace and trace.short_src)
   if file ~= file_last then file_last, file_json = file, json_value(file) end
   tests_file:write(TEST_LINE:format(encode(name), file_json, json_value(trace and trace.currentline),
                                     json_value(element.duration), json_value(status)))
end

--- Hooks a busted core instance (from busted.core's constructor). Idempotent.
function M.install(core)
   local engine = (ljleak.active() and tracker) or (vm.valgrind() and valgrind) or nil
   if core.__ljleak or not engine then return core end
   core.__ljleak = true
   local safe, publish = core.safe, core.publish
   local current   -- the test running now (its element), or nil
   local held      -- its outcome events (failure, error, test end), held until after its after_each
   local in_file   -- a file's context is open (busted runs several safe calls per file)
   local file_now  -- ... and that file's name, or nil

   -- A test's outcome is published before its after_each hooks run; the check must come after
   -- them (a fixture freed in after_each is no leak), so the outcome is held back until then.
   core.publish = function(channel, element, ...)
      if held and element == current and ((channel[1] == "test" and channel[2] == "end")
          or ((channel[1] == "failure" or channel[1] == "error") and channel[2] == "it")) then
         held[#held + 1] = {channel = channel, n = select("#", ...), ...}
         return
      end
      if channel[1] == "test" and channel[2] == "end" and type(element) == "table" and element.descriptor == "pending"
         and not current then   -- pending("..."): listed, never run nor checked
         local ret = {publish(channel, element, ...)}
         list_test(element, select(2, ...), full_name(core, element), file_now or file_name(core, element))
         return unpack(ret)
      end
      return publish(channel, element, ...)
   end

   -- After the whole test: its leaks fail it (added to its own failure, if it failed already),
   -- then the outcome goes out.
   local function settle(element, leaks, name)
      local events = held
      held = nil
      if leaks then
         local text = leak_text(element, leaks)
         local failed = false
         for _, e in ipairs(events) do
            if e.channel[1] == "failure" or e.channel[1] == "error" then  -- (parent, message, trace)
               local msg = e[2]
               if type(msg) == "table" and type(msg.message) == "string" then msg.message = msg.message .. "\n" .. text
               elseif type(msg) == "string" then e[2] = msg .. "\n" .. text
               else e[2] = text end
               failed = true
            end
         end
         if not failed then
            for i, e in ipairs(events) do
               if e.channel[1] == "test" then  -- (parent, status): a passing test fails
                  table.insert(events, i, {channel = {"failure", "it"}, n = 3, e[1], text, element.trace})
                  e[2] = "failure"
                  break
               end
            end
         end
      end
      local status
      for _, e in ipairs(events) do
         publish(e.channel, element, unpack(e, 1, e.n))
         if e.channel[1] == "test" then status = e[2] end
      end
      list_test(element, status, name, file_now or file_name(core, element))
   end

   local function finish(state) return PER_TEST and engine.finish(state) or nil end

   core.safe = function(descriptor, run, element)
      if element and element.descriptor == "it" and descriptor == "it" and run ~= element.run and not current then
         -- The whole test: before_each, the body, after_each.
         current, held = element, {}
         local name = full_name(core, element)
         local state = engine.enter(name)
         local ret = {safe(descriptor, run, element)}
         local ok, leaks = pcall(finish, state)
         if not ok then leaks = "ljleak: the leak check failed: " .. tostring(leaks) .. "\n" end
         engine.leave(state)
         settle(element, leaks, name)
         current = nil
         return unpack(ret)
      elseif element and element.descriptor == "file" and descriptor == "file" and not in_file then
         in_file, file_now = true, file_name(core, element)
         local st = engine.enter(file_now)
         local ret = {safe(descriptor, run, element)}
         engine.leave(st)
         in_file, file_now = false, nil
         return unpack(ret)
      end
      return safe(descriptor, run, element)
   end
   return core
end

-- Loaded as a helper (busted --helper=ljleak.busted, or a .busted file): the running busted's
-- core instance is the upvalue of the `busted` module's index function.
local function running_core()
   local ok, api = pcall(require, "busted")
   local mt = ok and type(api) == "table" and getmetatable(api)
   local index = mt and mt.__index
   if type(index) ~= "function" then return nil end
   for i = 1, 20 do
      local name, value = debug.getupvalue(index, i)
      if not name then break end
      if name == "busted" and type(value) == "table" and value.safe then return value end
   end
end

local core = running_core()
if core then
   if not ljleak.active() and not vm.valgrind() then
      io.stderr:write("ljleak.busted: no leak checker in this process (the tracker is not preloaded, and this is "
         .. "not Valgrind): no test is checked for leaks. Run the suite with `ljleak busted`, or "
         .. "`ljleak run -- busted ...`\n")
   end
   M.install(core)
end

return M
