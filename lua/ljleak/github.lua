-- GitHub Actions (GITHUB_ACTIONS=true): one `::error file=F,line=L::` annotation per leak site and
-- error that fails the run, at its Lua line (or C line) in the repository, and a Markdown summary
-- appended to $GITHUB_STEP_SUMMARY (totals, the baseline's counts, the biggest sites).
local lfs = require "lfs"

local model = require "ljleak.model"
local site = require "ljleak.site"
local text = require "ljleak.text"

local M = {}

-- Annotations written at most (GitHub shows 10 per step and 50 per job); the summary's sites.
M.MAX_ANNOTATIONS = 50
M.TOP_SITES = 10

local is_suppressed = model.is_suppressed

function M.enabled()
   return os.getenv("GITHUB_ACTIONS") == "true"
end

-- -- Workflow commands -----------------------------------------------------------------------

-- Escapes of a command's message, and of its properties (as GitHub's toolkit does).
local function escape_data(s)
   return (tostring(s):gsub("%%", "%%25"):gsub("\r", "%%0D"):gsub("\n", "%%0A"))
end

local function escape_property(s)
   return (escape_data(s):gsub(":", "%%3A"):gsub(",", "%%2C"))
end

-- "::error file=F,line=L,title=T::MESSAGE" (properties that are nil left out).
function M.command(name, props, message)
   local list = {}
   for _, k in ipairs({"file", "line", "title"}) do
      if props[k] then list[#list + 1] = k .. "=" .. escape_property(props[k]) end
   end
   return ("::%s%s::%s"):format(name, #list > 0 and " " .. table.concat(list, ",") or "", escape_data(message))
end

-- -- Paths in the repository -----------------------------------------------------------------

-- PATH without "." and "x/.." components.
local function normalize(path)
   local parts = {}
   for part in path:gmatch("[^/]+") do
      if part == ".." and #parts > 0 and parts[#parts] ~= ".." then
         parts[#parts] = nil
      elseif part ~= "." then
         parts[#parts + 1] = part
      end
   end
   return (path:sub(1, 1) == "/" and "/" or "") .. table.concat(parts, "/")
end

-- FILE (relative to the working directory, or absolute) as a path in the repository checked out
-- at $GITHUB_WORKSPACE (default: the working directory), or nil when it is outside.
function M.repository_path(file)
   local cwd = lfs.currentdir() or "."
   local abs = normalize(file:sub(1, 1) == "/" and file or cwd .. "/" .. file)
   local ws = os.getenv("GITHUB_WORKSPACE")
   ws = normalize(ws and ws ~= "" and ws or cwd)
   if abs:sub(1, #ws + 1) == ws .. "/" then return abs:sub(#ws + 2) end
   return nil
end

local function amount(blocks, bytes)
   return ("%s in %s"):format(text.plural(bytes, "byte"), text.plural(blocks, "block"))
end

-- -- Annotations -----------------------------------------------------------------------------

-- The workflow commands for REPORT judged by O (gate's options): one per failing site (its
-- records' readable report as the message), per unsuppressed error, and for processes left
-- unchecked under --fail-on=unchecked.
function M.annotations(report, o)
   local cmds = {}
   local function inside(path) return M.repository_path(path) ~= nil end
   local function add(r, title, message)
      local loc = site.location(r, inside)
      local file = loc and M.repository_path(loc.file)
      cmds[#cmds + 1] = M.command("error", {file = file, line = file and loc.line, title = title}, message)
   end
   local status = {}
   for _, s in ipairs(report.baseline and report.baseline.sites or {}) do status[s.kind .. " " .. s.site] = s.status end
   for _, s in ipairs(site.group(report.leaks, function(r) return model.fails(r, o.fail_on) end)) do
      local st = status[s.key]
      local title = ("ljleak: %s leak, %s%s"):format(s.kind, amount(s.blocks, s.bytes),
         st == "new" and " (not in the baseline)" or st == "grew" and " (grew beyond the baseline)" or "")
      add(s.records[1], title, ("site: %s\n%s"):format(s.site, site.records_text(s.records)))
   end
   for _, e in ipairs(report.errors or {}) do
      if not is_suppressed(e) then add(e, "ljleak: " .. tostring(e.kind), tostring(e.message)) end
   end
   if o.fail_on.unchecked then
      local pids = {}
      for _, p in ipairs(report.processes or {}) do
         if p.checked == false then pids[#pids + 1] = ("process %s %s"):format(tostring(p.pid), tostring(p.reason)) end
      end
      if #pids > 0 then
         cmds[#cmds + 1] = M.command("error", {title = "ljleak: processes not checked"}, table.concat(pids, "\n"))
      end
   end
   if #cmds > M.MAX_ANNOTATIONS then
      local more = #cmds - M.MAX_ANNOTATIONS
      for i = #cmds, M.MAX_ANNOTATIONS + 1, -1 do cmds[i] = nil end
      cmds[#cmds + 1] = M.command("error", {title = "ljleak"},
         ("%d more leak sites or errors fail the run; see the report"):format(more))
   end
   return cmds
end

-- -- Step summary ----------------------------------------------------------------------------

-- Text for a Markdown table cell, and for code in one.
local function cell(s)
   return (tostring(s):gsub("[\r\n]+", " "):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub("|", "\\|"))
end

local function code(s)
   return "`" .. tostring(s):gsub("[\r\n]+", " "):gsub("`", "'"):gsub("|", "\\|") .. "`"
end

-- The Markdown summary of REPORT judged by O.
function M.summary(report, o)
   local out = {}
   local function line(s) out[#out + 1] = s end
   local failing_sites = site.group(report.leaks, function(r) return model.fails(r, o.fail_on) end)
   local errors = 0
   for _, e in ipairs(report.errors or {}) do
      if not is_suppressed(e) then errors = errors + 1 end
   end
   local verdict = (#failing_sites == 0 and errors == 0) and "no leak fails the run"
      or ("%d leak site%s and %d error%s fail the run"):format(#failing_sites, #failing_sites == 1 and "" or "s",
         errors, errors == 1 and "" or "s")
   line(("### ljleak: %s"):format(verdict))
   line("")
   local what = code(table.concat(report.command or {}, " "))
   if report.shards then what = ("%d reports merged"):format(#report.shards) end
   line(("%s, engine %s, exit status %s"):format(what, cell(report.engine or "?"), cell(tostring(report.exit_status))))
   line("")
   local summary = report.summary or model.summarize(report.leaks or {})
   line("| kind | blocks | bytes |")
   line("|---|---:|---:|")
   local kinds = {unpack(model.KINDS)}
   kinds[#kinds + 1] = "suppressed"
   for _, k in ipairs(kinds) do
      local t = summary[k] or {blocks = 0, bytes = 0}
      line(("| %s | %d | %d |"):format(k, t.blocks, t.bytes))
   end
   line("")
   local status = {}
   if report.baseline then
      line(("Baseline %s: **%d new, %d fixed, %d known**%s"):format(code(report.baseline.file), report.baseline.new,
         report.baseline.fixed, report.baseline.known, report.baseline.updated and " (rewritten)" or ""))
      line("")
      for _, s in ipairs(report.baseline.sites) do status[s.kind .. " " .. s.site] = s.status end
   end
   -- The biggest sites of the --fail-on kinds: those that fail the run first.
   local sites = site.group(report.leaks, function(r) return o.fail_on[r.kind] and not is_suppressed(r) end)
   table.sort(sites, function(a, b)
      local fa, fb = status[a.key] ~= "known", status[b.key] ~= "known"
      if fa ~= fb then return fa end
      if a.bytes ~= b.bytes then return a.bytes > b.bytes end
      return a.key < b.key
   end)
   if #sites > 0 then
      line("| | kind | blocks | bytes | site | where |")
      line("|---|---|---:|---:|---|---|")
      for i = 1, math.min(#sites, M.TOP_SITES) do
         local s = sites[i]
         local loc = site.location(s.records[1])
         line(("| %s | %s | %d | %d | %s | %s |"):format(status[s.key] or "fails", s.kind, s.blocks, s.bytes,
            code(s.site), loc and cell(("%s:%d"):format(loc.file, loc.line)) or ""))
      end
      if #sites > M.TOP_SITES then line(("\n... and %d more sites (see the report)"):format(#sites - M.TOP_SITES)) end
      line("")
   end
   return table.concat(out, "\n") .. "\n"
end

-- -- Publishing ------------------------------------------------------------------------------

-- Write REPORT's annotations to OUT (a file handle) and append its summary to the file named by
-- $GITHUB_STEP_SUMMARY (if set). O: gate's options.
function M.publish(report, o, out)
   local cmds = M.annotations(report, o)
   if #cmds > 0 then
      out:write(table.concat(cmds, "\n"), "\n")
      out:flush()
   end
   local path = os.getenv("GITHUB_STEP_SUMMARY")
   if path and path ~= "" then
      local f, err = io.open(path, "ab")
      if not f then
         io.stderr:write("ljleak: GITHUB_STEP_SUMMARY: ", tostring(err), "\n")
         return
      end
      f:write(M.summary(report, o))
      f:close()
   end
end

return M
