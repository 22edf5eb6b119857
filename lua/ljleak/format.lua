-- The report files: a table of formatters keyed by name (text, json, junit, html, folded), each
-- writing in chunks to a sink, and which existing files ljleak may write over (outfile's rules).
local cjson = require "cjson"

local json = require "ljleak.json"
local model = require "ljleak.model"
local outfile = require "ljleak.outfile"
local text = require "ljleak.text"

local M = {}

local null, is_suppressed, plural, record_text = model.null, model.is_suppressed, text.plural, text.record_text
local frame_text = model.frame_text
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

-- A frame's name in folded stacks: its text without the object, no ';', no trailing blanks.
local folded_name_of = setmetatable({}, {__mode = "k"})

local function folded_name(f)
   local name = folded_name_of[f]
   if not name then
      name = frame_text(f):gsub(" %[[^%]]*%]$", ""):gsub(";", ","):gsub("%s+$", "")
      folded_name_of[f] = name
   end
   return name
end

-- A record's folded line: its kind, then its frames outermost first: C frames down to LuaJIT's
-- VM, the Lua frames it ran, then the C frames Lua called (the allocation function last).
local function folded_line(leak)
   local frames, names = leak.frames or EMPTY, {leak.kind}
   local vm = #frames + 1  -- the innermost frame in LuaJIT's VM
   for i, f in ipairs(frames) do
      if model.vm_frame(f) then
         vm = i
         break
      end
   end
   for i = #frames, vm, -1 do names[#names + 1] = folded_name(frames[i]) end
   for i = #(leak.lua or EMPTY), 1, -1 do
      local f = leak.lua[i]
      names[#names + 1] = ("%s:%s"):format(f.source or "?", f.line or "?"):gsub(";", ","):gsub("%s+$", "")
   end
   for i = math.min(vm - 1, #frames), 1, -1 do names[#names + 1] = folded_name(frames[i]) end
   return table.concat(names, ";") .. " " .. leak.bytes
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

local xml_escapes = {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;"}

-- Text for XML and HTML: markup characters escaped, control characters as '?', and a byte that
-- is not UTF-8 as the character of its number (U+0080 to U+00FF).
local function xml(s)
   s = tostring(s):gsub("[&<>\"']", xml_escapes):gsub("[%z\1-\8\11\12\14-\31]", "?")
   return (json.fix_utf8(s, json.latin1))
end

M.xml = xml

-- JUnit XML (ljleak.junit): a test case per test or per leak site. OPTS: fail_on, strict.
function M.formatters.junit(report, opts, sink)
   local o = {xml = xml, drain = json.drain, fail_on = opts and opts.fail_on, strict = opts and opts.strict}
   require("ljleak.junit").write(report, o, sink)
end

-- A self-contained HTML page: the summary, then each unsuppressed record with its frames.
function M.formatters.html(report, opts, sink)
   local b = sink.b
   local summary = report.summary or model.summarize(report.leaks or {})
   b:put("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ljleak report</title>\n<style>\n")
   b:put("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
      .. "padding:4px 8px;text-align:right} pre{background:#f6f6f6;padding:8px} .definite{color:#b00}"
      .. " .indirect{color:#b60} .possible{color:#960} .reachable{color:#666}</style></head><body>\n")
   b:put(("<h1>ljleak: %s</h1>\n"):format(xml(table.concat(report.command or {}, " "))))
   b:put(("<p>engine %s, exit status %s</p>\n"):format(xml(report.engine or "?"), xml(tostring(report.exit_status))))
   b:put("<table><tr><th>kind</th><th>blocks</th><th>bytes</th></tr>\n")
   local kinds = {unpack(model.KINDS)}
   kinds[#kinds + 1] = "suppressed"
   for _, k in ipairs(kinds) do
      local t = summary[k] or {blocks = 0, bytes = 0}
      b:put(('<tr><td class="%s">%s</td><td>%d</td><td>%d</td></tr>\n'):format(k, k, t.blocks, t.bytes))
   end
   b:put("</table>\n")
   b:put(require("ljleak.growthplot").html(report, xml))   -- `ljleak soak`: the growth plot
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) and (leak.kind ~= "reachable" or (opts and opts.show_reachable)) then
         b:put(('<h3 class="%s">%s: %s in %d block%s</h3><pre>%s</pre>\n'):format(leak.kind, leak.kind,
            plural(leak.bytes, "byte"), leak.blocks, leak.blocks == 1 and "" or "s", xml(record_text(leak))))
         json.drain(sink)
      end
   end
   for _, e in ipairs(report.errors or {}) do
      b:put(("<h3 class=\"definite\">error: %s</h3><pre>%s</pre>\n"):format(xml(e.kind), xml(e.message)))
   end
   b:put("</body></html>\n")
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

M.owns.html = starts_with('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ljleak report</title>')
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
