-- Leak records (JSON schema v1, shared/DESIGN.md): built from a run directory's raw reports,
-- counted, and written by a table of formatters keyed by name (text, json).
local util = require "ljleak.util"
local cjson = require "cjson"
local unistd = require "posix.unistd"

local raw = require "ljleak.raw"
local symbolize = require "ljleak.symbolize"

local M = {}

M.SCHEMA = 1
M.KINDS = raw.KINDS
M.KINDS_SET = {}
for _, k in ipairs(M.KINDS) do M.KINDS_SET[k] = true end
local kind_rank = {}
for i, k in ipairs(M.KINDS) do kind_rank[k] = i end

-- JSON null, as cjson.decode gives it.
M.null = cjson.null

-- -- Building records ------------------------------------------------------------------------

local function frames_key(frames)
   local t = {}
   for i, f in ipairs(frames) do t[i] = symbolize.frame_text(f) end
   return table.concat(t, "\n")
end

local function lua_key(frames)
   local t = {}
   for i, f in ipairs(frames) do
      t[i] = ("%s:%s:%s"):format(f.source or "", f.line or "", f["function"] or "")
   end
   return table.concat(t, "\1")
end

-- Lua frames of the test machinery (ljleak's own modules, busted's, luassert's) are noise in a
-- leak record: drop them, and the C function (pcall, xpcall) through which they were entered.
-- If nothing else is left, keep them all.
local machinery_dirs

local function machinery(f)
   if not machinery_dirs then
      machinery_dirs = {(debug.getinfo(1, "S").source:match("^@(.*/)[^/]*$"))}
      for _, mod in ipairs {"busted.core", "luassert.assert"} do
         local path = package.searchpath(mod, package.path)
         machinery_dirs[#machinery_dirs + 1] = path and path:match("^(.*/)[^/]*$")
      end
   end
   for _, dir in ipairs(machinery_dirs) do
      if f.source and f.source:sub(1, #dir) == dir then return true end
   end
   return false
end

function M.user_frames(frames)
   local out = {}
   for i, f in ipairs(frames) do
      local outer = frames[i + 1]
      if not machinery(f) and not (f.source == "[C]" and (not outer or machinery(outer))) then
         out[#out + 1] = f
      end
   end
   return #out > 0 and out or frames
end

-- "file.lua:12 (name)", and what an approximate location means.
function M.lua_frame_text(f)
   local where = f.line and ("%s:%d"):format(f.source or "?", f.line) or (f.source or "?")
   local what = f["function"] and f["function"] ~= M.null and f["function"] or nil
   if f.approximate and f.approximate ~= M.null then
      return ("%s (%sstart of the JIT trace that ran: the exact line is not known)"):format(
         where, what and (what .. ", ") or "")
   end
   return what and ("%s (%s)"):format(where, what) or where
end

local function zero_summary()
   local s = {}
   for _, k in ipairs(M.KINDS) do s[k] = {blocks = 0, bytes = 0} end
   s.suppressed = {blocks = 0, bytes = 0}
   return s
end

-- Totals per kind over LEAKS; suppressed records count only under `suppressed`.
function M.summarize(leaks)
   local s = zero_summary()
   for _, leak in ipairs(leaks) do
      local slot = (leak.suppressed_by ~= nil and leak.suppressed_by ~= M.null) and s.suppressed or s[leak.kind]
      if slot then
         slot.blocks = slot.blocks + leak.blocks
         slot.bytes = slot.bytes + leak.bytes
      end
   end
   return s
end

-- Build the report from PROCS (M.collect). OPTS: engine, command (argv list), exit_status, version,
-- symbolizer (a ljleak.symbolize object; default: a new one with OPTS.tracker).
-- Leaks of one process, kind and symbolized stack are merged into one record.
function M.build(procs, opts)
   opts = opts or {}
   local sym = opts.symbolizer or symbolize.new({tracker = opts.tracker})
   local leaks, by_key = {}, {}
   local processes = {}
   for _, proc in ipairs(procs) do
      processes[#processes + 1] = {pid = proc.pid, ppid = proc.ppid, exe = proc.exe, lua_state = proc.lua_state,
                                   truncated = proc.truncated or nil, stats = proc.stats, checked = true,
                                   lua = proc.lua_vm and "unavailable: " .. proc.lua_vm or nil,
                                   unstopped_threads = proc.unstopped}
      for _, leak in ipairs(proc.leaks) do
         local site = proc.sites[leak.site]
         local frames = sym:frames(proc, site)
         local lua = M.user_frames(site.lua and proc.lua and proc.lua[site.lua] or {})
         local ctx = site.ctx and proc.ctx and proc.ctx[site.ctx]
         local test = ctx and ctx.tag or nil
         local note = ctx and ctx.note or nil
         if site.dropped then
            note = "the stack was not recorded: the tracker's site table was full (LJLEAK_MAX_SITES)"
         end
         local key = table.concat({tostring(proc.pid), leak.kind, frames_key(frames), lua_key(lua),
                                   test or "", note or ""}, "\0")
         local rec = by_key[key]
         if rec then
            rec.blocks = rec.blocks + leak.blocks
            rec.bytes = rec.bytes + leak.bytes
         else
            rec = {kind = leak.kind, blocks = leak.blocks, bytes = leak.bytes, pid = proc.pid,
                   frames = frames, lua = lua, test = test, note = note, suppressed_by = nil}
            by_key[key] = rec
            leaks[#leaks + 1] = rec
         end
      end
   end
   table.sort(leaks, function(a, b)
      if a.pid ~= b.pid then return (a.pid or 0) < (b.pid or 0) end
      if a.kind ~= b.kind then return kind_rank[a.kind] < kind_rank[b.kind] end
      if a.bytes ~= b.bytes then return a.bytes > b.bytes end
      return frames_key(a.frames) < frames_key(b.frames)
   end)
   return {
      schema = M.SCHEMA, tool = "ljleak", version = opts.version or "scm", engine = opts.engine or "tracker",
      command = opts.command or {}, exit_status = opts.exit_status,
      summary = M.summarize(leaks), leaks = leaks, processes = processes, errors = opts.errors or {},
   }
end

-- Number of unsuppressed leak records whose kind is in KINDS (a set: {definite = true, ...}).
function M.failing(report, kinds)
   local n = 0
   for _, leak in ipairs(report.leaks or {}) do
      if kinds[leak.kind] and (leak.suppressed_by == nil or leak.suppressed_by == M.null) then
         n = n + 1
      end
   end
   for _, e in ipairs(report.errors or {}) do  -- errors always fail the run
      if e.suppressed_by == nil or e.suppressed_by == M.null then n = n + 1 end
   end
   return n
end

-- -- JSON encoding -----------------------------------------------------------------------------
-- cjson 2.1.0 encodes an empty table as {} (no array_mt yet), escapes "/" and orders keys at
-- random; this small encoder marks arrays explicitly and writes keys in schema order.

local array_mt = {__name = "ljleak.json_array"}

-- Mark T as a JSON array (so that an empty one is written as []).
function M.array(t)
   return setmetatable(t or {}, array_mt)
end

local key_order = {
   "schema", "tool", "version", "engine", "command", "exit_status", "summary", "leaks", "errors", "problems",
   "processes",
   "definite", "indirect", "possible", "reachable", "suppressed",
   "kind", "blocks", "bytes", "pid", "frames", "lua", "test", "note", "suppressed_by",
   "function", "mangled", "file", "dir", "line", "object", "offset", "address", "source", "message",
   "ppid", "exe", "checked", "reason", "lua_state", "unstopped_threads", "truncated", "stats",
}
local key_rank = {}
for i, k in ipairs(key_order) do key_rank[k] = i end

local function key_less(a, b)
   local ra, rb = key_rank[a], key_rank[b]
   if ra and rb then return ra < rb end
   if ra or rb then return ra ~= nil end
   return a < b
end

local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                 ["\r"] = "\\r", ["\t"] = "\\t"}

local function encode_string(s)
   return '"' .. s:gsub('[%c"\\]', function(c)
      return escapes[c] or ("\\u%04x"):format(c:byte())
   end) .. '"'
end

local function is_array(t)
   if getmetatable(t) == array_mt then return true end
   local n = #t
   if n == 0 then return false end
   local count = 0
   for _ in pairs(t) do count = count + 1 end
   return count == n
end

local encode_value

local function encode_scalar(v)
   local tv = type(v)
   if v == nil or v == M.null then
      return "null"
   elseif tv == "boolean" then
      return tostring(v)
   elseif tv == "number" then
      if v ~= v or v == math.huge or v == -math.huge then
         error("cannot encode " .. tostring(v) .. " in JSON")
      end
      if v == math.floor(v) and math.abs(v) < 2^53 then
         return ("%d"):format(v)
      end
      return ("%.17g"):format(v)
   elseif tv == "string" then
      return encode_string(v)
   end
   error("cannot encode a " .. tv .. " in JSON")
end

-- Containers holding only scalars go on one line; others get one item per line.
function encode_value(v, indent)
   if type(v) ~= "table" then return encode_scalar(v) end
   local items, flat = {}, true
   local open, close
   if is_array(v) then
      open, close = "[", "]"
      for i = 1, #v do
         if type(v[i]) == "table" then flat = false end
         items[i] = v[i]
      end
      for i = 1, #items do items[i] = encode_value(items[i], indent .. "  ") end
   else
      open, close = "{", "}"
      local keys = {}
      for k in pairs(v) do
         if type(k) ~= "string" then error("cannot encode a table with a " .. type(k) .. " key as a JSON object") end
         keys[#keys + 1] = k
      end
      table.sort(keys, key_less)
      for i, k in ipairs(keys) do
         if type(v[k]) == "table" then flat = false end
         items[i] = encode_string(k) .. ": " .. encode_value(v[k], indent .. "  ")
      end
   end
   if #items == 0 then return open .. close end
   if flat then return open .. table.concat(items, ", ") .. close end
   local inner = indent .. "  "
   return open .. "\n" .. inner .. table.concat(items, ",\n" .. inner) .. "\n" .. indent .. close
end

-- JSON text for any value built from tables, strings, numbers, booleans and M.null.
function M.encode(v)
   return encode_value(v, "")
end

-- The report as schema-v1 JSON data: arrays marked, absent test/suppressed_by written as null.
local function json_shape(report)
   local leaks = M.array()
   for i, leak in ipairs(report.leaks or {}) do
      local rec = {}
      for k, v in pairs(leak) do rec[k] = v end
      rec.frames = M.array({unpack(leak.frames or {})})
      rec.lua = M.array({unpack(leak.lua or {})})
      if rec.test == nil then rec.test = M.null end
      if rec.suppressed_by == nil then rec.suppressed_by = M.null end
      leaks[i] = rec
   end
   local out = {}
   for k, v in pairs(report) do out[k] = v end
   out.command = M.array({unpack(report.command or {})})
   out.leaks = leaks
   out.processes = report.processes and M.array({unpack(report.processes)}) or nil
   local errors = M.array()
   for i, e in ipairs(report.errors or {}) do
      local rec = {}
      for k, v in pairs(e) do rec[k] = v end
      rec.lua = M.array({unpack(e.lua or {})})
      if rec.frames then rec.frames = M.array({unpack(e.frames)}) end
      errors[i] = rec
   end
   out.errors = errors
   -- Per-process reports that were unreadable, malformed or truncated.
   local problems = M.array()
   for i, p in ipairs(report.problems or {}) do
      problems[i] = {pid = p.pid or M.null, file = p.file or M.null, message = p.message}
   end
   out.problems = problems
   if out.exit_status == nil then out.exit_status = M.null end
   return out
end

-- -- Text summary --------------------------------------------------------------------------

local function plural(n, word)
   return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

local function amount(t)
   return ("%s in %s"):format(plural(t.bytes, "byte"), plural(t.blocks, "block"))
end

local function pids_text(pids)
   if #pids == 1 then return "pid " .. pids[1] end
   if #pids <= 4 then return "pids " .. table.concat(pids, ", ") end
   return ("in %d processes"):format(#pids)
end

-- Unsuppressed records grouped by kind and stack, biggest first.
local function groups(report, show_reachable)
   local list, by_key = {}, {}
   for _, leak in ipairs(report.leaks or {}) do
      local suppressed = leak.suppressed_by ~= nil and leak.suppressed_by ~= M.null
      if not suppressed and (show_reachable or leak.kind ~= "reachable") then
         local test = leak.test ~= M.null and leak.test or nil
         local note = leak.note ~= M.null and leak.note or nil
         local key = table.concat({leak.kind, frames_key(leak.frames or {}), lua_key(leak.lua or {}), test or "",
                                   note or ""}, "\0")
         local g = by_key[key]
         if not g then
            g = {kind = leak.kind, blocks = 0, bytes = 0, pids = {}, seen = {}, frames = leak.frames or {}, key = key,
                 lua = leak.lua or {}, test = test, note = note}
            by_key[key] = g
            list[#list + 1] = g
         end
         g.blocks = g.blocks + leak.blocks
         g.bytes = g.bytes + leak.bytes
         if leak.pid and not g.seen[leak.pid] then
            g.seen[leak.pid] = true
            g.pids[#g.pids + 1] = leak.pid
         end
      end
   end
   table.sort(list, function(a, b)
      if a.bytes ~= b.bytes then return a.bytes > b.bytes end
      if a.blocks ~= b.blocks then return a.blocks > b.blocks end
      if a.kind ~= b.kind then return (kind_rank[a.kind] or 9) < (kind_rank[b.kind] or 9) end
      return a.key < b.key
   end)
   return list
end

-- Add FRAMES to the text with LINE, each indented by INDENT ("at" the first, "by" the others).
local function frame_lines(line, frames, indent)
   local i = 1
   while frames[i] do
      -- A run of unnamed frames in one object (LuaJIT's VM) is shown as its first frame.
      local j = i
      while frames[i]["function"] == nil and frames[i].object and frames[j + 1]
            and frames[j + 1]["function"] == nil and frames[j + 1].object == frames[i].object do
         j = j + 1
      end
      local more = j > i and (" (and %d more frames there)"):format(j - i) or ""
      line(("%s%s %s%s"):format(indent, i == 1 and "at" or "by", symbolize.frame_text(frames[i]), more))
      i = j + 1
   end
end

-- The suppressions used, as LeakSanitizer's "Suppressions used" table: how many records (errors:
-- occurrences) and bytes each entry suppressed.
local function suppressions_table(line, used)
   if not used or #used == 0 then return end
   line("SUPPRESSIONS USED:")
   line(("  %7s %10s  %s"):format("count", "bytes", "name"))
   for _, u in ipairs(used) do
      local count = (u.count or 0) > 0 and u.count or u.records or 0
      local bytes = (u.blocks or 0) > 0 and tostring(u.bytes) or "-"
      local where = u.line and ("%s:%d"):format(u.file, u.line) or u.file
      line(("  %7d %10s  %s%s"):format(count, bytes, u.name, where and " (" .. where .. ")" or ""))
   end
end

local function text_summary(report, opts)
   opts = opts or {}
   local out = {}
   local function line(s) out[#out + 1] = s end
   for _, g in ipairs(groups(report, opts.show_reachable)) do
      table.sort(g.pids)
      line(("%s: %s, %s%s"):format(g.kind, amount(g), pids_text(g.pids),
                                  g.test and (", in test " .. g.test) or ""))
      if g.note then line("    note: " .. g.note) end
      for _, lf in ipairs(g.lua) do
         line("    in Lua " .. M.lua_frame_text(lf))
      end
      frame_lines(line, g.frames, "    ")
      line("")
   end
   for _, e in ipairs(report.errors or {}) do
      if e.suppressed_by == nil or e.suppressed_by == M.null then
         local times = (e.count or 1) > 1 and (" (%d times)"):format(e.count) or ""
         line(("error: %s, pid %s%s"):format(e.kind, tostring(e.pid), times))
         line("    " .. e.message)
         for _, lf in ipairs(e.lua or {}) do line("    in Lua " .. M.lua_frame_text(lf)) end
         frame_lines(line, e.frames or {}, "    ")
         for _, aux in ipairs(e.aux or {}) do   -- Valgrind's: where the block was freed, allocated...
            if aux.what then line("    " .. aux.what) end
            frame_lines(line, aux.frames or {}, "      ")
         end
         line("")
      end
   end
   if opts.brief then  -- the records only (a test's failure message)
      return table.concat(out, "\n") .. "\n"
   end
   -- Leaks by test (or tag): what each test lost, biggest first.
   local by_test, tests = {}, {}
   for _, leak in ipairs(report.leaks or {}) do
      local test = leak.test ~= M.null and leak.test or nil
      local suppressed = leak.suppressed_by ~= nil and leak.suppressed_by ~= M.null
      if test and leak.kind ~= "reachable" and not suppressed then
         local t = by_test[test]
         if not t then
            t = {name = test, blocks = 0, bytes = 0}
            by_test[test] = t
            tests[#tests + 1] = t
         end
         t.blocks, t.bytes = t.blocks + leak.blocks, t.bytes + leak.bytes
      end
   end
   if #tests > 0 then
      table.sort(tests, function(a, b)
         if a.bytes ~= b.bytes then return a.bytes > b.bytes end
         return a.name < b.name
      end)
      line("LOST BY TEST:")
      for _, t in ipairs(tests) do line(("  %s: %s"):format(t.name, amount(t))) end
      line("")
   end
   if report.problems and #report.problems > 0 then
      line("PROBLEMS:")
      for _, p in ipairs(report.problems) do
         local pid = p.pid ~= nil and p.pid ~= M.null and ("pid " .. p.pid) or nil
         local file = p.file ~= nil and p.file ~= M.null and p.file or nil
         local who = file and (pid and ("%s (%s)"):format(file, pid) or file) or pid
         line("  " .. (who and who .. ": " or "") .. p.message)
      end
      line("")
   end
   local summary = report.summary or M.summarize(report.leaks or {})
   line("LEAK SUMMARY:")
   local names = {}
   for _, k in ipairs(M.KINDS) do names[#names + 1] = k end
   names[#names + 1] = "suppressed"
   for _, k in ipairs(names) do
      line(("  %10s: %s"):format(k, amount(summary[k] or {blocks = 0, bytes = 0})))
   end
   local reachable = summary.reachable or {blocks = 0}
   if not opts.show_reachable and reachable.blocks > 0 then
      line("Reachable blocks are not listed; rerun with --show-reachable to see where they were allocated.")
   end
   suppressions_table(line, report.suppressions)
   return table.concat(out, "\n") .. "\n"
end

-- -- Formatters ------------------------------------------------------------------------------

-- Each formatter: (report, opts) -> string.
M.formatters = {}

function M.formatters.json(report)
   return M.encode(json_shape(report)) .. "\n"
end

M.formatters.text = text_summary

local function is_suppressed(r)
   return r.suppressed_by ~= nil and r.suppressed_by ~= M.null
end

-- A record's frames, outermost first: C frames down to LuaJIT's VM, the Lua frames it ran,
-- then the C frames Lua called (the allocation function last).
local function frame_names(leak)
   local frames, names = leak.frames or {}, {}
   local vm = #frames + 1  -- the innermost frame in LuaJIT's VM
   for i, f in ipairs(frames) do
      local obj = f.object ~= M.null and f.object or ""
      if obj:match("/luajit[^/]*$") or obj:match("libluajit") then
         vm = i
         break
      end
   end
   local function c_frame(i)
      names[#names + 1] = (symbolize.frame_text(frames[i]):gsub(" %[[^%]]*%]$", ""))
   end
   for i = #frames, vm, -1 do c_frame(i) end
   for i = #(leak.lua or {}), 1, -1 do
      local f = leak.lua[i]
      names[#names + 1] = ("%s:%s"):format(f.source or "?", f.line or "?")
   end
   for i = math.min(vm - 1, #frames), 1, -1 do c_frame(i) end
   return names
end

-- Folded stacks (Brendan Gregg's flamegraph.pl, speedscope): "frame;frame;frame BYTES" per
-- unsuppressed record, the kind as the root frame.
function M.formatters.folded(report)
   local lines = {}
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) then
         local names = frame_names(leak)
         for i, n in ipairs(names) do names[i] = n:gsub(";", ","):gsub("%s+$", "") end
         table.insert(names, 1, leak.kind)
         lines[#lines + 1] = table.concat(names, ";") .. " " .. leak.bytes
      end
   end
   table.sort(lines)
   return table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
end

local xml_escapes = {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;"}
local function xml(s)
   return (tostring(s):gsub("[&<>\"']", xml_escapes):gsub("[%z\1-\8\11\12\14-\31]", "?"))
end

-- One record as readable text (its kind, size, test, Lua and C frames).
local function record_text(leak)
   return text_summary({leaks = {leak}}, {brief = true, show_reachable = true})
end

-- JUnit XML: one test case per unsuppressed record of a failing kind (opts.fail_on, default
-- definite) and per error, each a failure; one passing case when there is none.
function M.formatters.junit(report, opts)
   local fail_on = (opts and opts.fail_on) or {definite = true}
   local cases = {}
   for _, leak in ipairs(report.leaks or {}) do
      if fail_on[leak.kind] and not is_suppressed(leak) then
         local test = leak.test ~= M.null and leak.test or nil
         local where = leak.lua and leak.lua[1] and ("%s:%s"):format(leak.lua[1].source, leak.lua[1].line or "?")
            or symbolize.frame_text(leak.frames and leak.frames[2] or leak.frames[1] or {})
         local name = ("%s: %s in %s block%s at %s"):format(leak.kind, plural(leak.bytes, "byte"),
            leak.blocks, leak.blocks == 1 and "" or "s", where)
         cases[#cases + 1] = ('    <testcase classname="%s" name="%s">\n      <failure type="%s" '
            .. 'message="%s">%s</failure>\n    </testcase>'):format(xml("ljleak." .. (test or "leaks")), xml(name),
            xml(leak.kind), xml(name), xml(record_text(leak)))
      end
   end
   for _, e in ipairs(report.errors or {}) do
      if not is_suppressed(e) then
         cases[#cases + 1] = ('    <testcase classname="ljleak.errors" name="%s">\n      <failure type="%s" '
            .. 'message="%s">%s</failure>\n    </testcase>'):format(xml(e.kind .. ": " .. e.message), xml(e.kind),
            xml(e.message), xml(e.message))
      end
   end
   local failures = #cases
   if failures == 0 then
      cases[1] = '    <testcase classname="ljleak" name="no leaks"/>'
   end
   return ('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n  <testsuite name="ljleak" tests="%d" '
      .. 'failures="%d" errors="0">\n%s\n  </testsuite>\n</testsuites>\n'):format(#cases, failures,
      table.concat(cases, "\n"))
end

-- A self-contained HTML page: the summary, then each unsuppressed record with its frames.
function M.formatters.html(report, opts)
   local out = {}
   local function add(s) out[#out + 1] = s end
   local summary = report.summary or M.summarize(report.leaks or {})
   add("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ljleak report</title>\n<style>")
   add("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
      .. "padding:4px 8px;text-align:right} pre{background:#f6f6f6;padding:8px} .definite{color:#b00}"
      .. " .indirect{color:#b60} .possible{color:#960} .reachable{color:#666}</style></head><body>")
   add(("<h1>ljleak: %s</h1>"):format(xml(table.concat(report.command or {}, " "))))
   add(("<p>engine %s, exit status %s</p>"):format(xml(report.engine or "?"), xml(tostring(report.exit_status))))
   add("<table><tr><th>kind</th><th>blocks</th><th>bytes</th></tr>")
   for _, k in ipairs {"definite", "indirect", "possible", "reachable", "suppressed"} do
      local t = summary[k] or {blocks = 0, bytes = 0}
      add(('<tr><td class="%s">%s</td><td>%d</td><td>%d</td></tr>'):format(k, k, t.blocks, t.bytes))
   end
   add("</table>")
   for _, leak in ipairs(report.leaks or {}) do
      if not is_suppressed(leak) and (leak.kind ~= "reachable" or (opts and opts.show_reachable)) then
         add(('<h3 class="%s">%s: %s in %d block%s</h3><pre>%s</pre>'):format(leak.kind, leak.kind,
            plural(leak.bytes, "byte"), leak.blocks, leak.blocks == 1 and "" or "s", xml(record_text(leak))))
      end
   end
   for _, e in ipairs(report.errors or {}) do
      add(("<h3 class=\"definite\">error: %s</h3><pre>%s</pre>"):format(xml(e.kind), xml(e.message)))
   end
   add("</body></html>\n")
   return table.concat(out, "\n")
end

function M.format(report, name, opts)
   local formatter = M.formatters[name]
   if not formatter then error("unknown report format '" .. tostring(name) .. "'") end
   return formatter(report, opts)
end

-- -- Files -----------------------------------------------------------------------------------

-- Write CONTENT to PATH atomically: PATH.tmp.<pid>, then rename. Returns true or nil, message.
function M.write_file(path, content)
   local tmp = ("%s.tmp.%d"):format(path, unistd.getpid())
   local f, err = io.open(tmp, "wb")
   if not f then return nil, err end
   local ok, werr = f:write(content)
   local cok, cerr = f:close()
   if not ok or not cok then
      os.remove(tmp)
      return nil, ("%s: %s"):format(tmp, tostring(werr or cerr))
   end
   local rok, rerr = os.rename(tmp, path)
   if not rok then
      os.remove(tmp)
      return nil, rerr
   end
   return true
end

-- Write REPORT to PATH with formatter NAME. Returns true or nil, message.
function M.write(report, path, name, opts)
   return M.write_file(path, M.format(report, name, opts))
end

local function strip_nulls(v)
   if type(v) ~= "table" then return v end
   for k, x in pairs(v) do
      if x == M.null then v[k] = nil else strip_nulls(x) end
   end
   return v
end

-- Decode the JSON report in TEXT. Returns the report (JSON nulls removed) or nil, message.
function M.decode(text, name)
   local ok, data = pcall(cjson.decode, text)
   if not ok then return nil, ("%s: not JSON (%s)"):format(name or "report", tostring(data)) end
   if type(data) ~= "table" or data.tool ~= "ljleak" or type(data.schema) ~= "number" then
      return nil, ("%s: not an ljleak report"):format(name or "report")
   end
   if data.schema > M.SCHEMA then
      return nil, ("%s: report schema %d is newer than this ljleak (%d)")
         :format(name or "report", data.schema, M.SCHEMA)
   end
   return strip_nulls(data)
end

-- Read the JSON report at PATH. Returns the report or nil, message.
M.read = util.reader(M.decode)

-- For each output format: is the file at PATH one ljleak wrote in it, so that overwriting it
-- loses nothing the user wrote by hand?
M.owns = {}

local function starts_with(prefix)
   return function(path)
      local text = util.read_file(path)
      return text ~= nil and text:sub(1, #prefix) == prefix
   end
end

M.owns.html = starts_with('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ljleak report</title>')
M.owns.junit = starts_with('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n  <testsuite name="ljleak"')

function M.owns.folded(path)
   local text = util.read_file(path)
   if not text then return false end
   for line in text:gmatch("[^\n]+") do
      if not (line:match("^%a+;.* %d+$") and M.KINDS_SET[line:match("^(%a+);")]) then return false end
   end
   return true
end

-- Is PATH an ljleak JSON report (of any schema version), so that overwriting it loses nothing
-- the user wrote by hand?
function M.is_report(path)
   local text = util.read_file(path)
   if not text then return false end
   local ok, data = pcall(cjson.decode, text)
   return ok and type(data) == "table" and data.tool == "ljleak" and type(data.schema) == "number"
end
M.owns.json = M.is_report

return M
