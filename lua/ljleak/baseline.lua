-- Baselines: the leak sites a project accepts for now (--baseline=FILE), so that a leak gate can
-- be turned on where the code already leaks a little. A run then fails only on a site that is not
-- in the baseline, or on one whose blocks or bytes grew beyond it; --update-baseline rewrites it.
-- Sites are matched by their signature (ljleak.site). A baseline is a saved JSON report (its
-- unsuppressed records), or a list kept by hand:
--
--   # ljleak baseline 1
--   # KIND BLOCKS BYTES SITE, one site a line ...
--   definite 1 32 malloc < leak_chain < t/leak/chain.lua:main chunk
--
-- (fields apart by blanks; SITE is the rest of the line; lines starting with # are comments).
local json = require "ljleak.json"
local model = require "ljleak.model"
local site = require "ljleak.site"
local util = require "ljleak.util"

local M = {}

M.FORMAT = 1
M.HEADER = "# ljleak baseline "

local is_suppressed = model.is_suppressed

-- Is a file whose content starts with HEAD one that ljleak wrote as a baseline (a list, or a
-- JSON report)? For outfile's rules.
function M.owns(head, complete)
   if head:sub(1, #M.HEADER) == M.HEADER then return true end
   return require("ljleak.format").owns.json(head, complete)
end

-- -- Reading ---------------------------------------------------------------------------------

local function new_baseline(file, format)
   return {file = file, format = format, sites = {}, order = {}}
end

local function add(base, kind, sig, blocks, bytes)
   local key = kind .. " " .. sig
   local s = base.sites[key]
   if not s then
      s = {kind = kind, site = sig, blocks = 0, bytes = 0}
      base.sites[key] = s
      base.order[#base.order + 1] = key
   end
   s.blocks, s.bytes = s.blocks + blocks, s.bytes + bytes
end

-- The sites of a JSON report's unsuppressed records.
local function from_report(rep, file)
   local base = new_baseline(file, "json")
   for _, r in ipairs(rep.leaks or {}) do
      if not is_suppressed(r) then add(base, r.kind, site.signature(r), r.blocks, r.bytes) end
   end
   return base
end

local function parse_list(text, file)
   if text == "" then
      return nil, ('%s: empty; expected a JSON report, or a list whose first line is "%s%d"'):format(file, M.HEADER,
         M.FORMAT)
   end
   local base = new_baseline(file, "list")
   local n = 0
   for line in (text:gsub("\r\n", "\n") .. (text:sub(-1) == "\n" and "" or "\n")):gmatch("([^\n]*)\n") do
      n = n + 1
      if n == 1 then
         local version = line:match("^# ljleak baseline (%S+)%s*$")
         if not version then
            return nil, ('%s:1: not an ljleak baseline (expected a JSON report, or a list whose first line is '
               .. '"%s%d")'):format(file, M.HEADER, M.FORMAT)
         end
         if version ~= tostring(M.FORMAT) then
            return nil, ("%s:1: baseline format %s; this ljleak reads format %d"):format(file, version, M.FORMAT)
         end
      elseif not line:match("^%s*$") and not line:match("^%s*#") then
         local kind, blocks, bytes, sig = line:match("^%s*(%S+)%s+(%S+)%s+(%S+)%s+(.-)%s*$")
         if not kind then
            return nil, ("%s:%d: expected KIND BLOCKS BYTES SITE, found %q"):format(file, n, line)
         end
         if not model.KINDS_SET[kind] then
            return nil, ("%s:%d: unknown leak kind '%s' (use %s)"):format(file, n, kind,
               table.concat(model.KINDS, ", "))
         end
         for _, v in ipairs({{"BLOCKS", blocks}, {"BYTES", bytes}}) do
            if not v[2]:match("^%d+$") then
               return nil, ("%s:%d: %s must be a count (an integer >= 0), found '%s'"):format(file, n, v[1], v[2])
            end
         end
         add(base, kind, sig, tonumber(blocks), tonumber(bytes))
      end
   end
   return base
end

-- Read the baseline at PATH. Returns {file, format = "list"|"json", sites = {[key] = {kind, site,
-- blocks, bytes}}, order = {key...}}, or nil and one line: what was expected and where it broke.
function M.read(path)
   local text, err = util.read_file(path)
   if not text then return nil, ("%s: cannot read it: %s"):format(path, (tostring(err):gsub("^[^:]*: ", ""))) end
   if text:match("^%s*{") then
      local rep, derr = json.decode(text, path)
      if not rep then return nil, derr end
      return from_report(rep, path)
   end
   return parse_list(text, path)
end

-- -- Judging a report ------------------------------------------------------------------------

-- Judge REPORT's sites of the FAIL_ON kinds (unsuppressed) against BASE (from M.read; nil: an
-- empty one): each record of such a site gets `baseline` = "known" (the site is in BASE, and
-- its blocks and bytes are within it) or "new" (not in BASE, or grown beyond it), and
-- report.baseline says {file, new, fixed, known, sites = {{status = new|grew|known|fixed, kind,
-- site, blocks, bytes, baseline_blocks, baseline_bytes}...}}. A grown site counts as new.
function M.apply(report, base, fail_on, file)
   base = base or new_baseline(file, "list")
   for _, r in ipairs(report.leaks or {}) do r.baseline = nil end
   local result = {file = file, new = 0, fixed = 0, known = 0, sites = json.array()}
   local seen = {}
   local sites = site.group(report.leaks, function(r) return fail_on[r.kind] and not is_suppressed(r) end)
   for _, s in ipairs(sites) do
      local b = base.sites[s.key]
      seen[s.key] = true
      local status = not b and "new" or ((s.blocks > b.blocks or s.bytes > b.bytes) and "grew") or "known"
      if status == "known" then result.known = result.known + 1 else result.new = result.new + 1 end
      for _, r in ipairs(s.records) do r.baseline = status == "known" and "known" or "new" end
      result.sites[#result.sites + 1] = {status = status, kind = s.kind, site = s.site, blocks = s.blocks,
                                         bytes = s.bytes, baseline_blocks = b and b.blocks,
                                         baseline_bytes = b and b.bytes}
   end
   for _, key in ipairs(base.order) do
      local b = base.sites[key]
      if fail_on[b.kind] and not seen[key] then
         result.fixed = result.fixed + 1
         result.sites[#result.sites + 1] = {status = "fixed", kind = b.kind, site = b.site, blocks = 0, bytes = 0,
                                            baseline_blocks = b.blocks, baseline_bytes = b.bytes}
      end
   end
   report.baseline = result
   return result
end

-- -- Writing ---------------------------------------------------------------------------------

-- The kinds a rewritten baseline lists: the lost ones, and whatever else fails the run.
local function listed_kind(kind, fail_on)
   return kind ~= "reachable" or fail_on.reachable
end

local function listed_sites(report, fail_on)
   return site.group(report.leaks, function(r)
      return model.KINDS_SET[r.kind] and listed_kind(r.kind, fail_on) and not is_suppressed(r)
   end)
end

-- REPORT's sites as a baseline list (text), in a stable order: by kind, then by site.
function M.format(report, fail_on)
   local sites = listed_sites(report, fail_on)
   table.sort(sites, function(a, b)
      if a.kind ~= b.kind then return model.kind_rank[a.kind] < model.kind_rank[b.kind] end
      return a.site < b.site
   end)
   local out = {
      M.HEADER .. M.FORMAT,
      "# Leak sites accepted for now, one a line: KIND BLOCKS BYTES SITE. A run given --baseline=THIS_FILE fails",
      "# only on a site not listed here, or on one whose blocks or bytes grew beyond these. SITE: the C functions",
      "# from the allocation down to LuaJIT, then the Lua frames innermost first (FILE:FUNCTION), joined by ' < ';",
      "# [TEST] when a test allocated the blocks. No line numbers: moving code does not change a site.",
      "# Written by ljleak --update-baseline; edit it by hand as you like.",
   }
   for _, s in ipairs(sites) do
      out[#out + 1] = ("%-9s %6d %10d  %s"):format(s.kind, s.blocks, s.bytes, s.site)
   end
   return table.concat(out, "\n") .. "\n"
end

-- Rewrite the baseline at TARGET (outfile's) from REPORT, in the format FORMAT ("json": the whole
-- report; "list"); then every site of the report is known. Returns the number of sites it
-- lists, or nil and a message.
function M.update(report, target, format, fail_on)
   local ok, err
   if format == "json" then
      ok, err = require("ljleak.format").write_to(target, report, "json")
   else
      ok, err = require("ljleak.outfile").write(target, function(write) write(M.format(report, fail_on)) end)
   end
   if not ok then return nil, err end
   local result = report.baseline
   for _, r in ipairs(report.leaks or {}) do
      if r.baseline then r.baseline = "known" end
   end
   if result then result.updated = true end
   return #listed_sites(report, fail_on)
end

-- The format a baseline at PATH is written in when it does not exist yet: a JSON report for
-- FILE.json, else a list.
function M.format_for(path)
   return path:match("%.json$") and "json" or "list"
end

-- -- Saying it -------------------------------------------------------------------------------

local function amount(blocks, bytes)
   return ("%d byte%s in %d block%s"):format(bytes, bytes == 1 and "" or "s", blocks, blocks == 1 and "" or "s")
end

-- Lines naming the new, grown and fixed sites of REPORT (at most LIMIT of each), for stderr.
function M.lines(report, limit)
   local result = report.baseline
   if not result then return {} end
   limit = limit or 20
   local out = {}
   for _, status in ipairs({"new", "grew", "fixed"}) do
      local n = 0
      for _, s in ipairs(result.sites) do
         if s.status == status then
            n = n + 1
            if n <= limit then
               local what = status == "grew" and ("grew to %s (baseline: %s)"):format(amount(s.blocks, s.bytes),
                  amount(s.baseline_blocks, s.baseline_bytes))
                  or status == "fixed" and ("fixed (baseline: %s)"):format(amount(s.baseline_blocks, s.baseline_bytes))
                  or ("new, %s"):format(amount(s.blocks, s.bytes))
               out[#out + 1] = ("  %s %s: %s"):format(s.kind, what, s.site)
            end
         end
      end
      if n > limit then
         out[#out + 1] = ("  ... and %d more %s sites (see the JSON report)"):format(n - limit, status)
      end
   end
   return out
end

return M
