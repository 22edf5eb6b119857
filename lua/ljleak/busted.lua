-- busted integration: every allocation is tagged with the full name of the running test (its
-- before_each and after_each included; setup, teardown and file-level code with the file's
-- name), and, with per-test checks on, a test whose blocks are lost once it has run fails in
-- busted's own output with the leak report as its message.
--
-- Installed by itself under `ljleak run`/`ljleak busted` (the ljleak module wraps busted.core's
-- constructor); also usable as `busted --helper=ljleak.busted` and from a .busted file.
local ljleak = require "ljleak"

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

-- Runs the test body, then checks what the test (since its before_each) left behind.
local function checked_body(core, run, element, snapshot)
  return function(...)
    local ok, err = pcall(run, ...)
    if not PER_TEST or not snapshot then
      if not ok then error(err, 0) end
      return
    end
    local recs, problems = failing(ljleak.check_since(snapshot))
    if #recs == 0 and #problems == 0 then
      if not ok then error(err, 0) end
      return
    end
    local text = ("ljleak: the test leaked:\n%s"):format(ljleak.format(recs, problems))
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
  if core.__ljleak or not ljleak.active() then return core end
  core.__ljleak = true
  local safe = core.safe
  local current   -- the test running now (its element), or nil
  local snapshot  -- taken when it started (before its before_each)
  core.safe = function(descriptor, run, element)
    if element and element.descriptor == "it" and descriptor == "it" then
      if run ~= element.run and not current then
        -- The whole test: before_each, the body, after_each.
        current = element
        local old = ljleak.tag(full_name(core, element))
        snapshot = ljleak.snapshot()
        local ret = {safe(descriptor, run, element)}
        current, snapshot = nil, nil
        ljleak.tag(old)
        return unpack(ret)
      elseif run == element.run then
        return safe(descriptor, checked_body(core, run, element, snapshot), element)
      end
    elseif element and element.descriptor == "file" and descriptor == "file" then
      local old = ljleak.tag(file_name(core, element))
      local ret = {safe(descriptor, run, element)}
      ljleak.tag(old)
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
