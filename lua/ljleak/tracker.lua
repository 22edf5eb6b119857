-- The tracker engine, CLI side: reads a traced run's directory (doc/raw-format.md) into processes.
-- collect(run_dir, opts) -> procs, problems, errors, unchecked
local cjson = require "cjson"
local lfs = require "lfs"

local raw = require "ljleak.raw"
local util = require "ljleak.util"

local M = {}

-- Non-leak errors found in the program (a bad free in an ffi.gc finalizer...): one JSON object a
-- line in lua.<pid>.jsonl, written by the ljleak Lua module.
local function read_errors(path, errors, problems)
   local f = io.open(path, "rb")
   if not f then return end
   local n = 0
   for line in f:lines() do
      n = n + 1
      local ok, e = pcall(cjson.decode, line)
      if ok and type(e) == "table" and e.kind and e.message then
         errors[#errors + 1] = e
      elseif line ~= "" then
         problems[#problems + 1] = {file = path, message = ("%s:%d: not an error record"):format(path, n)}
      end
   end
   f:close()
end

local function first_line(path)
   local text = util.read_file(path)
   return text and text:match("^([^\n]*)") or nil
end

-- Why process PID, started under the tracker (or spawned by a process that was), wrote no report.
local function unchecked_reason(pid, notes, opts)
   if notes[pid] then return notes[pid] end
   if opts.child == pid and opts.child_signal then
      return ("was killed by %s before its exit handlers could run"):format(opts.child_signal)
   end
   if util.alive(pid) then return "was still running when the command ended" end
   return "ended without running its exit handlers (killed by a signal, or crashed)"
end

-- Parse every proc.<pid>.raw in RUN_DIR. Returns procs (sorted by pid); problems: a list of
-- {pid, file, message} for unreadable, malformed and truncated reports; errors: non-leak errors
-- the program's processes recorded ({kind, message, pid, lua, ...}); and unchecked: the
-- processes that started under the tracker, or left it, and wrote no report ({pid, reason}).
-- OPTS.child, OPTS.child_signal: the command's own pid, and the signal that killed it.
function M.collect(run_dir, opts)
   opts = opts or {}
   local procs, problems, errors, unchecked = {}, {}, {}, {}
   local names, started, reported, notes = {}, {}, {}, {}
   local ok, iter, dir_obj = pcall(lfs.dir, run_dir)
   if not ok then
      problems[1] = {file = run_dir, message = tostring(iter)}
      return procs, problems, errors, unchecked
   end
   for name in iter, dir_obj do names[#names + 1] = name end
   table.sort(names)
   for _, name in ipairs(names) do
      local path = run_dir .. "/" .. name
      local pid = tonumber(name:match("^proc%.(%d+)%.") or name:match("^lua%.(%d+)%.") or "")
      local suffix = name:match("^proc%.%d+%.(.+)$")
      if suffix == "raw" and lfs.symlinkattributes(path, "mode") == "file" then
         local proc, err = raw.read(path)
         if proc then
            procs[#procs + 1] = proc
            reported[proc.pid or pid] = true
            if proc.truncated then
               problems[#problems + 1] = {pid = proc.pid, file = path, message = ("%s: truncated (process %s died "
                  .. "while writing it); its leaks may be incomplete"):format(path, tostring(proc.pid))}
            end
         else
            reported[pid] = true
            problems[#problems + 1] = {pid = pid, file = path, message = err}
         end
      elseif suffix == "raw.tmp" then
         problems[#problems + 1] = {pid = pid, file = path,
                                    message = ("process %d died while writing its report (%s)"):format(pid, path)}
         reported[pid] = true
      elseif suffix == "live" then
         started[#started + 1] = pid
      elseif suffix == "exec" or suffix == "untraced" then
         notes[pid] = first_line(path)
         if suffix == "untraced" then started[#started + 1] = pid end
      elseif name:match("^lua%.%d+%.jsonl$") then
         read_errors(path, errors, problems)
      end
   end
   local seen = {}
   for _, pid in ipairs(started) do
      if not reported[pid] and not seen[pid] then
         seen[pid] = true
         unchecked[#unchecked + 1] = {pid = pid, reason = unchecked_reason(pid, notes, opts)}
      end
   end
   table.sort(procs, function(a, b) return (a.pid or 0) < (b.pid or 0) end)
   table.sort(unchecked, function(a, b) return a.pid < b.pid end)
   return procs, problems, errors, unchecked
end

return M
