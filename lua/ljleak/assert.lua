-- luassert extension: `require "ljleak.assert"`, then `assert.no_leaks(fn, ...)` fails with the
-- readable leak report when blocks allocated by fn are lost once it returned and garbage was
-- collected (see ljleak.check), or when the ffi.gc registry saw a problem during it;
-- `assert.stable(fn [, opts])` fails when fn's live set grows with each call (ljleak.stable).
local ljleak = require "ljleak"
local say = require "say"
local luassert = require "luassert"

local function no_leaks(_, arguments)
   local fn = arguments[1]
   if type(fn) ~= "function" then
      error("assert.no_leaks: expected a function, got " .. type(fn), 3)
   end
   local recs, problems = ljleak.check(fn, unpack(arguments, 2, arguments.n))
   local lost = {}
   for _, r in ipairs(recs) do
      if r.kind ~= "reachable" then lost[#lost + 1] = r end
   end
   local failed = #lost > 0 or #problems > 0
   -- The report, as the message's argument (luassert formats arguments with its own printer).
   arguments[1] = failed and ljleak.format(lost, problems) or "no leaks"
   arguments.n = 1
   return not failed
end

local function stable(_, arguments)
   local fn = arguments[1]
   if type(fn) ~= "function" then
      error("assert.stable: expected a function, got " .. type(fn), 3)
   end
   local ok, sites = ljleak.stable(fn, arguments[2])
   arguments[1] = ok and "no growth" or ljleak.format_growth(sites)
   arguments.n = 1
   return ok
end

say:set("assertion.no_leaks.positive", "Expected no leaks, but:\n%s")
say:set("assertion.no_leaks.negative", "Expected leaks, but there were none (%s)")
luassert:register("assertion", "no_leaks", no_leaks, "assertion.no_leaks.positive",
   "assertion.no_leaks.negative")
say:set("assertion.stable.positive", "Expected a stable live set, but:\n%s")
say:set("assertion.stable.negative", "Expected growth, but there was none (%s)")
luassert:register("assertion", "stable", stable, "assertion.stable.positive", "assertion.stable.negative")

return ljleak
