-- busted integration: every allocation is tagged with the full name of the running test (its
-- before_each and after_each included; setup, teardown and file-level code with the file's
-- name), and, with per-test checks on, a test whose blocks are lost once it has run fails in
-- busted's own output with the leak report as its message.
--
-- Installed by itself under `ljleak run`/`ljleak busted` (the ljleak module wraps busted.core's
-- constructor); also usable as `busted --helper=ljleak.busted` and from a .busted file.
local ljleak = require "ljleak"
local vm = require "ljleak.vm"

local M = {}

local KIND_SET = {}
for k in (os.getenv("LJLEAK_FAIL_ON") or "definite"):gmatch("[^,]+") do KIND_SET[k] = true end
local PER_TEST = os.getenv("LJLEAK_PER_TEST") ~= "0"

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
-- body_leaks(state) says (text) what the test body lost, or nil.

-- The tracker: tags, and a check of the blocks born since the test began.
local tracker = {}

function tracker.enter(name)
  return {old = ljleak.tag(name), snapshot = ljleak.snapshot()}
end

function tracker.leave(st)
  ljleak.tag(st.old)
end

function tracker.body_leaks(st)
  local recs, problems = failing(ljleak.check_since(st.snapshot))
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

function valgrind.body_leaks()
  local d, p = vg_check()
  local lost = {}
  if KIND_SET.definite and d > 0 then lost[#lost + 1] = ("%d bytes definitely lost"):format(d) end
  if KIND_SET.possible and p > 0 then lost[#lost + 1] = ("%d bytes possibly lost"):format(p) end
  if #lost == 0 then return nil end
  return ("Valgrind found %s in this test; ljleak's report lists the records under its name\n")
    :format(table.concat(lost, " and "))
end

-- Runs the test body, then checks what the test (since its before_each) left behind.
local function checked_body(core, engine, run, element, st)
  return function(...)
    local ok, err = pcall(run, ...)
    local leaks = PER_TEST and st and engine.body_leaks(st)
    if not leaks then
      if not ok then error(err, 0) end
      return
    end
    local text = "ljleak: the test leaked:\n" .. leaks
    local trace = element.trace
    if ok and trace and trace.short_src then  -- where busted shows the failure: the test
      text = ("%s:%d: %s"):format(trace.short_src, trace.currentline or 0, text)
    end
    if ok then core.fail(text, 0) end
    -- The test failed anyway: keep its own failure, with the leaks after it.
    if type(err) == "table" and type(err.message) == "string" then
      err.message = err.message .. "\n" .. text
    elseif type(err) == "string" then
      err = err .. "\n" .. text
    end
    error(err, 0)
  end
end

--- Hooks a busted core instance (from busted.core's constructor). Idempotent.
function M.install(core)
  local engine = (ljleak.active() and tracker) or (vm.valgrind() and valgrind) or nil
  if core.__ljleak or not engine then return core end
  core.__ljleak = true
  local safe = core.safe
  local current   -- the test running now (its element), or nil
  local state     -- its context state (taken before its before_each)
  local in_file   -- a file's context is open (busted runs several safe calls per file)
  core.safe = function(descriptor, run, element)
    if element and element.descriptor == "it" and descriptor == "it" then
      if run ~= element.run and not current then
        -- The whole test: before_each, the body, after_each.
        current = element
        state = engine.enter(full_name(core, element))
        local ret = {safe(descriptor, run, element)}
        engine.leave(state)
        current, state = nil, nil
        return unpack(ret)
      elseif run == element.run then
        return safe(descriptor, checked_body(core, engine, run, element, state), element)
      end
    elseif element and element.descriptor == "file" and descriptor == "file" and not in_file then
      in_file = true
      local st = engine.enter(file_name(core, element))
      local ret = {safe(descriptor, run, element)}
      engine.leave(st)
      in_file = false
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
if core then M.install(core) end

return M
