-- The report files: a table of formatters keyed by name (text, json, junit, html, folded), each
-- writing in chunks to a sink, and which existing files ljleak may write over (outfile's rules).
local cjson = require "cjson"

local json = require "ljleak.json"
local model = require "ljleak.model"
local outfile = require "ljleak.outfile"
local text = require "ljleak.text"

local M = {}

local null, is_suppressed = model.null, model.is_suppressed
local EMPTY = json.array()
local TOP_DEFAULTS = {command = EMPTY, exit_status = null, leaks = EMPTY, errors = EMPTY, problems = EMPTY}

-- -- Formatters ------------------------------------------------------------------------------

-- Each formatter: (report, opts, sink) writes its text into SINK (json.sink), calling json.drain
-- between items so that a big report goes out in chunks.
M.formatters = {}

function M.formatters.json(report, _, sink)
   json.write(report, sink, TOP_DEFAULTS)
   sink.b:put("\n")
end

function M.formatters.text(report, opts, sink)
   sink.b:put(text.render(report, opts))
end

-- A record's folded line: its kind (the root frame), then its stack's names outermost first (as
-- text.stack_names gives them: the Lua frames and the C frames they called down to the
-- allocation function, LuaJIT's VM left out), no ';' in them, then its bytes.
local function folded_line(leak)
   local names, out = text.stack_names(leak.frames or EMPTY, leak.lua or EMPTY), {leak.kind}
   for i = #names, 1, -1 do out[#out + 1] = (names[i]:gsub(";", ",")) end
   return table.concat(out, ";") .. " " .. leak.bytes
end

-- Folded stacks (Brendan Gregg's flamegraph.pl, speedscope): "frame;frame;frame BYTES" per
-- unsuppressed record, the kind as the root frame.
function M.formatters.folded(report, _, sink)
   local lines = {}
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) then lines[#lines + 1] = folded_line(leak) end
   end
   table.sort(lines)
   for _, l in ipairs(lines) do
      sink.b:put(l, "\n")
      json.drain(sink)
   end
end

-- Text for XML: markup characters escaped, valid UTF-8 (json.markup).
local xml = json.markup

M.xml = xml

-- JUnit XML (ljleak.junit): a test case per test or per leak site. OPTS: fail_on, strict.
function M.formatters.junit(report, opts, sink)
   local o = {xml = xml, drain = json.drain, fail_on = opts and opts.fail_on, strict = opts and opts.strict}
   require("ljleak.junit").write(report, o, sink)
end

-- A self-contained HTML page (ljleak.html).
-- (Loaded when a page is written: most runs write none, and its load is a cost of every run.)
function M.formatters.html(report, opts, sink)
   require("ljleak.html").write(report, opts, sink)
end

-- Write REPORT in format NAME to SINK (json.sink), all of it drained. OPTS: the formatter's.
function M.render(report, name, opts, sink)
   local formatter = M.formatters[name]
   if not formatter then error("unknown report format '" .. tostring(name) .. "'") end
   formatter(report, opts, sink)
   json.drain(sink, true)
end

-- REPORT in format NAME, as one string (small reports: a test's message, the text summary).
function M.format(report, name, opts)
   local sink = json.sink()
   M.render(report, name, opts, sink)
   return sink.b:tostring()
end

-- -- Files -----------------------------------------------------------------------------------

-- For each output format: is a file whose content starts with HEAD (all of it when COMPLETE)
-- one that ljleak wrote in it, so that overwriting it loses nothing the user wrote by hand?
M.owns = {}

local function starts_with(prefix)
   return function(head)
      return head:sub(1, #prefix) == prefix
   end
end

function M.owns.html(head)
   return starts_with(require("ljleak.html").HEAD)(head)
end
M.owns.junit = starts_with('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n  <testsuite name="ljleak"')

function M.owns.folded(head, complete)
   if not complete then head = head:match("^(.*\n)") or "" end
   for line in head:gmatch("[^\n]+") do
      if not (line:match("^%a+;.* %d+$") and model.KINDS_SET[line:match("^(%a+);")]) then return false end
   end
   return true
end

-- An ljleak JSON report of any schema version: as this writer starts it, or any JSON object
-- with "tool": "ljleak" and a numeric "schema".
function M.owns.json(head, complete)
   if head:match('^%s*{%s*"schema"%s*:%s*%d+%s*,%s*"tool"%s*:%s*"ljleak"') then return true end
   if not complete then return false end
   local ok, data = pcall(cjson.decode, head)
   return ok and type(data) == "table" and data.tool == "ljleak" and type(data.schema) == "number"
end

-- Write REPORT in format NAME to TARGET (from outfile.check). Returns true or nil, message.
function M.write_to(target, report, name, opts)
   return outfile.write(target, function(write)
      M.render(report, name, opts, json.sink(write))
   end)
end

-- Write REPORT in format NAME to the file at PATH, by the rules of outfile.check.
-- Returns true or nil, message.
function M.write(report, path, name, opts)
   local targets, err = outfile.check({{option = "--" .. name, path = path, owns = M.owns[name]}})
   if not targets then return nil, err end
   return M.write_to(targets[1], report, name, opts)
end

-- -- Outputs of a run ------------------------------------------------------------------------

-- The report files asked for (--json, --junit, --html, --folded), by format name.
M.OUTPUTS = {"json", "junit", "html", "folded"}

-- Check ARGS' output files (outfile's rules) before anything runs: the report formats, and EXTRA
-- (more specs for outfile.check, each with the `name` its target gets: --gen-suppressions, the
-- baseline that --update-baseline rewrites). Returns the targets by name (json, ...,
-- gen_suppressions, baseline), or nil and a message.
function M.check_outputs(args, extra)
   local specs = {}
   for _, name in ipairs(M.OUTPUTS) do
      if args[name] then
         specs[#specs + 1] = {name = name, option = "--" .. name, path = args[name], owns = M.owns[name]}
      end
   end
   for _, spec in ipairs(extra or {}) do specs[#specs + 1] = spec end
   local targets, err = outfile.check(specs)
   if not targets then return nil, err end
   local by_name = {}
   for i, t in ipairs(targets) do by_name[specs[i].name] = t end
   return by_name
end

-- Write each report file of OUTPUTS (from check_outputs). Returns true, or false and the
-- messages of those that could not be written.
function M.write_outputs(outputs, rep, opts)
   local errors = {}
   for _, name in ipairs(M.OUTPUTS) do
      if outputs[name] then
         local ok, err = M.write_to(outputs[name], rep, name, opts)
         if not ok then errors[#errors + 1] = err end
      end
   end
   return #errors == 0, errors
end

return M
