-- The verdict on a report, one for `ljleak run` and for `ljleak report` re-gating a saved report:
-- --fail-on, --error-exitcode, --baseline and --update-baseline checked before anything runs; the
-- baseline applied (and rewritten); the exit code; and what is said after the text report (the
-- baseline's new, grown and fixed sites; GitHub Actions' annotations and step summary).
local psignal = require "posix.signal"

local baseline = require "ljleak.baseline"
local const = require "ljleak.const"
local github = require "ljleak.github"
local model = require "ljleak.model"
local util = require "ljleak.util"

local M = {}

local fail = util.fail

local function warn(fmt, ...)
   io.stderr:write("ljleak: ", fmt:format(...), "\n")
end

-- -- Options ---------------------------------------------------------------------------------

local function parse_fail_on(option)
   local kinds = {}
   for word in (option .. ","):gmatch("([^,]*),") do
      if not model.KINDS_SET[word] and word ~= "unchecked" and word ~= "growth" then
         fail("usage", "--fail-on=%s: unknown leak kind '%s' (use %s, unchecked, growth)", option, word,
            table.concat(const.KINDS, ", "))
      end
      kinds[word] = true
   end
   return kinds
end

local function parse_exitcode(option)
   local n = option:match("^%d+$") and tonumber(option)
   if not n or n > 255 then
      fail("usage", "--error-exitcode=%s: must be an integer from 0 to 255", option)
   end
   return n
end

-- Is there a file at PATH with something in it?
local function nonempty(path)
   local f = io.open(path, "rb")
   if not f then return false end
   local byte = f:read(1)
   f:close()
   return byte ~= nil
end

-- The verdict's options from ARGS (parsed): {fail_on (a set), error_exitcode, baseline (read, or
-- nil when --update-baseline is to create it), baseline_path, baseline_format, update}. A
-- baseline that cannot be read is a usage error, found before anything runs.
function M.options(args)
   local o = {fail_on = parse_fail_on(args.fail_on), error_exitcode = parse_exitcode(args.error_exitcode),
              update = args.update_baseline or false}
   if o.update and not args.baseline then
      fail("usage", "--update-baseline: also give --baseline=FILE, the baseline to write")
   end
   if args.baseline then
      if not o.update or nonempty(args.baseline) then
         local data, err = baseline.read(args.baseline)
         if not data then fail("usage", "--baseline: %s", err) end
         o.baseline = data
      end
      o.baseline_path = args.baseline
      o.baseline_format = o.baseline and o.baseline.format or baseline.format_for(args.baseline)
   end
   return o
end

-- The baseline as an output file, when --update-baseline rewrites it (a spec for outfile.check,
-- named "baseline"), or nil.
function M.output_spec(o)
   if not o.update then return nil end
   return {name = "baseline", option = "--update-baseline", path = o.baseline_path, owns = baseline.owns,
           what = "a baseline or JSON report written by ljleak"}
end

-- -- The verdict -----------------------------------------------------------------------------

-- Judge REPORT by O: the baseline applied (every record of a --fail-on kind marked known or new),
-- and rewritten with --update-baseline (TARGET: its outfile target). Returns true, or false when
-- the baseline could not be written (said on stderr).
function M.judge(report, o, target)
   report.baseline = nil
   for _, r in ipairs(report.leaks or {}) do r.baseline = nil end
   if not o.baseline_path then return true end
   baseline.apply(report, o.baseline, o.fail_on, o.baseline_path)
   if o.update then
      local sites, err = baseline.update(report, target, o.baseline_format, o.fail_on)
      if not sites then
         warn("%s", err)
         return false
      end
      warn("wrote the baseline %s (%d site%s)", o.baseline_path, sites, sites == 1 and "" or "s")
   end
   return true
end

local function count_processes(report)
   local checked, unchecked = 0, 0
   for _, p in ipairs(report.processes or {}) do
      if p.checked == false then unchecked = unchecked + 1 else checked = checked + 1 end
   end
   return checked, unchecked
end

-- The exit code for REPORT, as `ljleak run` chooses it (EXIT: ljleak.cli's table): 124 or 128+N
-- when the run was interrupted; CMD's status when CMD was killed; --error-exitcode when a record
-- or error fails the run (or a process was left unchecked, with --fail-on=unchecked); 2 when no
-- process was checked; else CMD's own status.
function M.exit_code(report, o, EXIT)
   local status = type(report.exit_status) == "number" and report.exit_status or 0
   local interrupted = report.interrupted
   if type(interrupted) == "string" then
      if interrupted:match("^timeout") then return EXIT.timeout end
      local n = psignal[interrupted] or tonumber(interrupted:match("^signal (%d+)$") or "")
      if type(n) == "number" then return EXIT.signal_base + n end
   end
   if report.killed then return status end
   local code = status
   local checked, unchecked = count_processes(report)
   if o.error_exitcode ~= 0 then
      if model.failing(report, o.fail_on) > 0 then code = o.error_exitcode end
      if o.fail_on.unchecked and unchecked > 0 then code = o.error_exitcode end
   end
   if report.processes and checked == 0 then code = EXIT.failure end
   return code
end

-- The kinds of the set KINDS (leak kinds and unchecked), in the order of const.KINDS, as a list.
function M.kinds_list(kinds)
   local list = {}
   for _, k in ipairs(const.KINDS) do
      if kinds[k] then list[#list + 1] = k end
   end
   if kinds.unchecked then list[#list + 1] = "unchecked" end
   if kinds.growth then list[#list + 1] = "growth" end
   return list
end

local plural = util.plural

-- REPORT's verdict by O (the report's `verdict`): {exit_code (M.exit_code's), why (in words),
-- fail_on (the --fail-on kinds, which `ljleak report` lists as the run did)}. NAME: the command's.
function M.verdict(report, o, EXIT, name)
   local code = M.exit_code(report, o, EXIT)
   local fail_on = M.kinds_list(o.fail_on)
   local kinds = table.concat(fail_on, ",")
   local function v(fmt, ...) return {exit_code = code, why = fmt:format(...), fail_on = fail_on} end
   if type(report.interrupted) == "string" then
      return v("interrupted (%s): the report covers only the processes that finished", report.interrupted)
   end
   if report.killed then return v("%s was killed by %s", name, report.killed) end
   local checked, unchecked = count_processes(report)
   if report.processes and checked == 0 then return v("no process was checked") end
   local why = {}
   local failing = {records = 0, blocks = 0, bytes = 0}
   for _, leak in ipairs(report.leaks or {}) do
      if model.fails(leak, o.fail_on) then
         failing.records, failing.blocks, failing.bytes = failing.records + 1, failing.blocks + leak.blocks,
            failing.bytes + leak.bytes
      end
   end
   if failing.records > 0 then
      why[#why + 1] = ("%s of a --fail-on kind (%s): %s in %s"):format(plural(failing.records, "record"), kinds,
         plural(failing.bytes, "byte"), plural(failing.blocks, "block"))
   end
   local growing = 0
   for _, g in ipairs(report.growth or {}) do
      if model.fails(g, o.fail_on) then growing = growing + 1 end
   end
   if growing > 0 then why[#why + 1] = ("%s growing with each iteration (soak)"):format(plural(growing, "site")) end
   local errors = model.summarize({}, report.errors or {}).error_totals
   if errors.records > 0 then
      why[#why + 1] = ("%s (Valgrind's or the ffi.gc registry's)"):format(plural(errors.records, "error"))
   end
   if o.fail_on.unchecked and unchecked > 0 then
      why[#why + 1] = ("%s not checked (--fail-on=unchecked)"):format(plural(unchecked, "process"))
   end
   if #why > 0 and o.error_exitcode ~= 0 then
      return v("%s (--error-exitcode)", table.concat(why, "; "))
   end
   if #why > 0 then
      return v("%s, but --error-exitcode=0: %s's own exit status", table.concat(why, "; "), name)
   end
   return v("nothing of a --fail-on kind (%s) found: %s's own exit status", kinds, name)
end

-- Say, after the text report (on OUT), the baseline's new, grown and fixed sites; under GitHub
-- Actions, annotate the failing sites (on ANNOTATE_TO) and append the step summary.
function M.tell(report, o, out, annotate_to)
   local lines = baseline.lines(report)
   if #lines > 0 then out:write(table.concat(lines, "\n"), "\n") end
   if github.enabled() then github.publish(report, o, annotate_to) end
end

return M
