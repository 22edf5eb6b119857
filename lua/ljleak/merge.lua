-- `ljleak report merge A.json B.json ... -o ALL.json`: the reports of a suite's shards (jobs,
-- machines) as one report, as one run over all of them would have written it. Records of the same
-- process and site (kind, frames, Lua frames, test, note, suppression) add up, as they do in one
-- run; processes, errors, problems, tests and the suppressions used (their counts added) are kept.
-- The verdict is then `ljleak report ALL.json --fail-on=...`'s.
local json = require "ljleak.json"
local model = require "ljleak.model"

local M = {}

local function copy(t)
   local c = {}
   for k, v in pairs(t) do c[k] = v end
   return c
end

local function append(list, items)
   for _, x in ipairs(items or {}) do list[#list + 1] = x end
end

-- The values of FIELD in REPORTS, each once, in order.
local function distinct(reports, field)
   local list, seen = {}, {}
   for _, r in ipairs(reports) do
      local v = r[field]
      if v ~= nil and not seen[v] then
         seen[v] = true
         list[#list + 1] = v
      end
   end
   return list
end

local function merge_leaks(reports)
   local merger = model.merger(model.numbering({}))
   for _, rep in ipairs(reports) do
      local merged_of = {}   -- a record's number in REP: its merged record (owners come first)
      for _, r in ipairs(rep.leaks or {}) do
         local frames, lua = json.array(r.frames or {}), json.array(r.lua or {})
         local owner = r.owner and r.owner ~= json.null and merged_of[r.owner] or nil
         local rec = merger:add(r.pid, r.kind, r.test, r.note, r.suppressed_by, frames, lua, r.blocks, r.bytes,
            function()
               local rec = copy(r)
               rec.frames, rec.lua, rec.baseline, rec.id, rec.owner = frames, lua, nil, nil, nil
               return rec
            end, owner)
         if r.id and r.id ~= json.null then merged_of[r.id] = rec end
      end
   end
   return merger:records()
end

local function merge_suppressions(reports)
   local by_key, list = {}, json.array()
   for _, rep in ipairs(reports) do
      for _, u in ipairs(rep.suppressions or {}) do
         local key = ("%s\0%s\0%s"):format(u.name, tostring(u.file), tostring(u.line))
         local m = by_key[key]
         if not m then
            m = copy(u)
            by_key[key] = m
            list[#list + 1] = m
         else
            for _, k in ipairs({"records", "blocks", "bytes", "count"}) do
               if u[k] then m[k] = (m[k] or 0) + u[k] end
            end
         end
      end
   end
   return list
end

-- REPORTS (decoded JSON reports, as json.read gives them) read from FILES, as one report. Its
-- exit status is the first shard's that is not 0 (with that shard's `killed`), `interrupted` the
-- first shard's; `shards` lists where each came from.
function M.merge(reports, files)
   local first = reports[1]
   local merged = {
      schema = model.SCHEMA, tool = "ljleak", version = first.version, command = first.command,
      exit_status = 0, leaks = merge_leaks(reports), errors = json.array(), problems = json.array(),
      processes = json.array(), suppressions = merge_suppressions(reports), shards = json.array(),
   }
   merged.engine = table.concat(distinct(reports, "engine"), "+")
   merged.hostname = #distinct(reports, "hostname") > 0 and table.concat(distinct(reports, "hostname"), ",") or nil
   local tests, duration = {}, nil
   for i, rep in ipairs(reports) do
      append(merged.errors, rep.errors)
      append(merged.problems, rep.problems)
      append(merged.processes, rep.processes)
      append(tests, rep.tests)
      if merged.exit_status == 0 and type(rep.exit_status) == "number" and rep.exit_status ~= 0 then
         merged.exit_status, merged.killed = rep.exit_status, rep.killed
      end
      merged.interrupted = merged.interrupted or rep.interrupted
      if rep.started and (not merged.started or rep.started < merged.started) then merged.started = rep.started end
      if type(rep.duration) == "number" then duration = (duration or 0) + rep.duration end
      merged.shards[i] = {file = files[i], command = json.array(rep.command or {}), exit_status = rep.exit_status,
                          engine = rep.engine, hostname = rep.hostname, started = rep.started,
                          duration = rep.duration, interrupted = rep.interrupted, killed = rep.killed}
   end
   merged.duration = duration
   if #tests > 0 then merged.tests = json.array(tests) end
   merged.summary = model.summarize(merged.leaks, merged.errors)
   merged.heap = model.heap_totals(merged.processes)
   return merged
end

return M
