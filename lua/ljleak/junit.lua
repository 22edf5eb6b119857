-- JUnit XML that CI test reports track from run to run (GitHub's JUnit reporters, GitLab's
-- artifacts:reports:junit, Jenkins' junit and xUnit): one test case per test when the runner
-- named its tests (busted: report.tests), otherwise one per leak site, named by the site's stable
-- signature (ljleak.site: no sizes, addresses or pids), so that a test case keeps its name from
-- run to run. A case fails with the readable report of its leaks; a pending test that leaked
-- nothing is skipped, as in busted's own JUnit; a site a baseline accepts is skipped, one it
-- listed that is gone passes. Cases carry `file` and `line` where the Lua or C location is
-- known, unless opts.strict: Jenkins' junit-10.xsd and Ant's JUnit.xsd allow neither, and
-- everything else in the file validates against both (t/junit_spec.lua).
local model = require "ljleak.model"
local site = require "ljleak.site"
local text = require "ljleak.text"

local M = {}

local is_suppressed, plural = model.is_suppressed, text.plural

local function amount(blocks, bytes)
   return ("%s in %s"):format(plural(bytes, "byte"), plural(blocks, "block"))
end

-- A test file as a class name: "spec/parser_spec.lua" -> "spec.parser_spec".
local function class_of(file)
   if not file then return "ljleak.tests" end
   return (site.source(file):gsub("%.lua$", ""):gsub("/+", "."))
end

-- "2024-05-01T10:00:00" (UTC; Ant's schema wants no zone).
local function timestamp(report)
   local t = type(report.started) == "string" and report.started:match("^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d)")
   return t or os.date("!%Y-%m-%dT%H:%M:%S")
end

local function hostname(report)
   if type(report.hostname) == "string" and report.hostname:match("%S") then return report.hostname end
   local ok, utsname = pcall(require, "posix.sys.utsname")
   local u = ok and utsname.uname()
   return u and u.nodename ~= "" and u.nodename or "localhost"
end

local function seconds(t)
   return ("%.3f"):format(type(t) == "number" and t >= 0 and t or 0)
end

-- The failure of a case that holds leak RECORDS and ERRORS: {type, message, body}, or nil.
local function failure(records, errors)
   if #records == 0 and #errors == 0 then return nil end
   local by_kind, kinds = {}, {}
   for _, r in ipairs(records) do
      local t = by_kind[r.kind]
      if not t then
         t = {blocks = 0, bytes = 0}
         by_kind[r.kind] = t
         kinds[#kinds + 1] = r.kind
      end
      t.blocks, t.bytes = t.blocks + r.blocks, t.bytes + r.bytes
   end
   local body = {#records > 0 and site.records_text(records) .. "\n" or nil}
   local message = {}
   for _, k in ipairs(kinds) do message[#message + 1] = ("%s leak: %s"):format(k, amount(by_kind[k].blocks,
      by_kind[k].bytes)) end
   for i, e in ipairs(errors) do   -- (at most 10, as records)
      if i > 10 then
         message[#message + 1] = ("and %d more errors"):format(#errors - 10)
         body[#body + 1] = ("... and %d more errors; see the JSON report\n"):format(#errors - 10)
         break
      end
      message[#message + 1] = ("%s: %s"):format(e.kind, e.message)
      body[#body + 1] = ("error: %s, pid %s\n    %s\n"):format(e.kind, tostring(e.pid), e.message)
   end
   return {type = kinds[1] or errors[1].kind, message = table.concat(message, "; "), body = table.concat(body, "\n")}
end

-- The test cases of REPORT: {classname, name, time, file, line, failure = {type, message, body},
-- skipped = message}.
function M.cases(report, opts)
   local fail_on = opts.fail_on or {definite = true}
   -- A test listed again (busted --repeat, shards) is one case; two tests of the same name at
   -- different lines are two, as in busted's own JUnit. A leak record names its test by name
   -- alone: it goes to the first of them.
   local cases, by_test, by_place = {}, {}, {}
   for _, t in ipairs(report.tests or {}) do
      local place = ("%s\0%s\0%s"):format(t.name, tostring(t.file), tostring(t.line))
      local c = by_place[place]
      if c then
         c.time = c.time + (tonumber(t.time) or 0)
      else
         c = {classname = t.class or class_of(t.file), name = t.case or t.name, time = tonumber(t.time) or 0,
              file = t.file, line = t.line, records = {}, errors = {}}
         by_place[place] = c
         by_test[t.name] = by_test[t.name] or c
         cases[#cases + 1] = c
      end
      if t.status == "pending" then c.skipped = "pending" end   -- as busted's own JUnit says (unless it leaked)
   end
   local function of_test(r) return r.test and by_test[r.test] end
   local others = {}
   for _, r in ipairs(report.leaks or {}) do
      if model.fails(r, fail_on) then
         local c = of_test(r)
         if c then c.records[#c.records + 1] = r else others[#others + 1] = r end
      end
   end
   local function site_case(s, extra)
      local loc = site.location(s.records and s.records[1] or {})
      local c = {classname = "ljleak." .. s.kind, name = s.site, time = 0, file = loc and loc.file,
                 line = loc and loc.line, records = s.records or {}, errors = {}}
      for k, v in pairs(extra or {}) do c[k] = v end
      cases[#cases + 1] = c
   end
   for _, s in ipairs(site.group(others, function() return true end)) do site_case(s) end
   local result = report.baseline
   if result then
      local known = site.group(report.leaks, function(r) return r.baseline == "known" and not of_test(r) end)
      for _, s in ipairs(known) do
         site_case(s, {records = {}, skipped = ("a known leak site, in the baseline %s: %s"):format(result.file,
            amount(s.blocks, s.bytes))})
      end
      for _, s in ipairs(result.sites or {}) do
         local tag = s.site:match(" %[(.*)%]$")
         if s.status == "fixed" and not (tag and by_test[tag]) then site_case(s) end
      end
   end
   local errors_by_name = {}
   for _, e in ipairs(report.errors or {}) do
      if not is_suppressed(e) then
         local c = of_test(e)
         if not c then
            local name = ("%s at %s"):format(e.kind, site.signature(e))
            c = errors_by_name[name]
            if not c then
               local loc = site.location(e)
               c = {classname = "ljleak.errors", name = name, time = 0, file = loc and loc.file,
                    line = loc and loc.line, records = {}, errors = {}}
               errors_by_name[name] = c
               cases[#cases + 1] = c
            end
         end
         c.errors[#c.errors + 1] = e
      end
   end
   if fail_on.unchecked then
      local lines = {}
      for _, p in ipairs(report.processes or {}) do
         if p.checked == false then
            lines[#lines + 1] = ("process %s %s"):format(tostring(p.pid), tostring(p.reason))
         end
      end
      if #lines > 0 then
         cases[#cases + 1] = {classname = "ljleak", name = "unchecked processes", time = 0, records = {}, errors = {},
                              failure = {type = "unchecked", message = ("%d processes were not checked"):format(#lines),
                                         body = table.concat(lines, "\n")}}
      end
   end
   if #cases == 0 then
      cases[1] = {classname = "ljleak", name = "leak check", time = 0, records = {}, errors = {}}
   end
   for _, c in ipairs(cases) do c.failure = c.failure or failure(c.records, c.errors) end
   return cases
end

-- Write REPORT as JUnit XML into SINK (json.sink). OPTS: fail_on (a set; default definite),
-- strict (no file and line attributes), xml (escapes text for XML), drain(sink).
function M.write(report, opts, sink)
   local xml = opts.xml
   local cases = M.cases(report, opts)
   local failures, skipped = 0, 0
   for _, c in ipairs(cases) do
      if c.failure then failures = failures + 1 elseif c.skipped then skipped = skipped + 1 end
   end
   local b = sink.b
   b:put('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n',
      ('  <testsuite name="ljleak" tests="%d" failures="%d" errors="0" skipped="%d" time="%s" timestamp="%s" '
       .. 'hostname="%s" id="0" package="ljleak">\n'):format(#cases, failures, skipped, seconds(report.duration),
       timestamp(report), xml(hostname(report))))
   local fail_on = {}
   for k in pairs(opts.fail_on or {definite = true}) do fail_on[#fail_on + 1] = k end
   table.sort(fail_on)
   b:put("    <properties>\n")
   local props = {{"command", table.concat(report.command or {}, " ")}, {"engine", report.engine or "?"},
                  {"fail-on", table.concat(fail_on, ",")}, {"exit-status", tostring(report.exit_status)}}
   if report.baseline then props[#props + 1] = {"baseline", report.baseline.file} end
   for _, p in ipairs(props) do b:put(('      <property name="%s" value="%s"/>\n'):format(p[1], xml(p[2]))) end
   b:put("    </properties>\n")
   for _, c in ipairs(cases) do
      local where = ""
      if not opts.strict and c.file then
         where = (' file="%s"'):format(xml(c.file)) .. (c.line and (' line="%d"'):format(c.line) or "")
      end
      b:put(('    <testcase classname="%s" name="%s" time="%s"%s'):format(xml(c.classname), xml(c.name),
         seconds(c.time), where))
      if c.failure then
         b:put(('>\n      <failure type="%s" message="%s">%s</failure>\n    </testcase>\n'):format(xml(c.failure.type),
            xml(c.failure.message), xml(c.failure.body)))
      elseif c.skipped then
         b:put(('>\n      <skipped message="%s"/>\n    </testcase>\n'):format(xml(c.skipped)))
      else
         b:put("/>\n")
      end
      opts.drain(sink)
   end
   -- The totals (the records are the failures above), and the problems.
   local totals = text.render(report, {limit = 0})
   b:put("    <system-out>", xml(totals:match("\n(LEAK SUMMARY:.*)$") or totals), "</system-out>\n")
   local problems = {}
   for _, p in ipairs(report.problems or {}) do problems[#problems + 1] = tostring(p.message) end
   b:put("    <system-err>", xml(table.concat(problems, "\n")), "</system-err>\n")
   b:put("  </testsuite>\n</testsuites>\n")
end

return M
