-- Leak sites: the stable signature of a leak record (what a baseline, the JUnit test cases and the
-- GitHub annotations name it by), records grouped into sites, and where a site is in the sources.
--
-- A signature holds no address, offset, size, pid or line number, so it is the same from run to
-- run (ASLR), from machine to machine, and after edits that move lines: the C frames above
-- LuaJIT's VM by function name (an unnamed frame by its object's file name, "?(libfoo.so)"; frames
-- of JIT code left out; repeats of one name, a recursion, once), then the Lua frames innermost first
-- as FILE:FUNCTION ("?" for an anonymous function), joined by " < "; then " [TAG]" when the
-- blocks were allocated under a tag (a busted test's name). The leak kind is part of a site too.
-- Two leaks of one Lua function that reach malloc by the same C path are one site: their
-- blocks and bytes add up.
local lfs = require "lfs"

local model = require "ljleak.model"
local text = require "ljleak.text"

local M = {}

local null = model.null
local EMPTY = {}

local function present(v)
   return v ~= nil and v ~= null
end

-- -- Sources ---------------------------------------------------------------------------------

local cwd   -- ljleak's working directory, with a trailing "/"

local function current_dir()
   if cwd == nil then
      local dir = lfs.currentdir()
      cwd = dir and (dir:sub(-1) == "/" and dir or dir .. "/") or false
   end
   return cwd
end

-- A source file's name as a signature has it: without leading "./", relative to the working
-- directory when it is under it.
function M.source(path)
   path = tostring(path):gsub("^@", "")
   while path:sub(1, 2) == "./" do path = path:sub(3) end
   local dir = current_dir()
   if dir and path:sub(1, #dir) == dir then path = path:sub(#dir + 1) end
   return path
end

local function basename(path)
   return (tostring(path):match("([^/]*)$"))
end

-- -- Signatures ------------------------------------------------------------------------------

local signature_of = setmetatable({}, {__mode = "k"})

-- The signature of leak record (or error) R.
function M.signature(r)
   local sig = signature_of[r]
   if sig then return sig end
   local parts, last = {}, nil
   for _, f in ipairs(r.frames or EMPTY) do
      if model.vm_frame(f) then break end
      local part
      if present(f["function"]) then
         part = f["function"]
      elseif present(f.object) then
         part = "?(" .. basename(f.object) .. ")"
      end
      if part and part ~= last then parts[#parts + 1] = part end
      last = part or last
   end
   for _, f in ipairs(r.lua or EMPTY) do
      local fn = present(f["function"]) and f["function"] or "?"
      parts[#parts + 1] = M.source(present(f.source) and f.source or "?") .. ":" .. fn
   end
   sig = #parts > 0 and table.concat(parts, " < ") or "(no stack)"
   if present(r.test) then sig = sig .. " [" .. r.test .. "]" end
   sig = sig:gsub("%c", "?")   -- one line, no tabs: a baseline file holds one site a line
   signature_of[r] = sig
   return sig
end

-- The key of R's site: its kind and signature.
function M.key(r)
   return r.kind .. " " .. M.signature(r)
end

-- The sites of the records of LEAKS that KEEP(record) accepts: {kind, site (the signature), key,
-- blocks, bytes, records}, biggest first (then by key).
function M.group(leaks, keep)
   local by_key, list = {}, {}
   for _, r in ipairs(leaks or EMPTY) do
      if keep(r) then
         local key = M.key(r)
         local s = by_key[key]
         if not s then
            s = {kind = r.kind, site = M.signature(r), key = key, blocks = 0, bytes = 0, records = {}}
            by_key[key] = s
            list[#list + 1] = s
         end
         s.blocks, s.bytes = s.blocks + r.blocks, s.bytes + r.bytes
         s.records[#s.records + 1] = r
      end
   end
   table.sort(list, function(a, b)
      if a.bytes ~= b.bytes then return a.bytes > b.bytes end
      return a.key < b.key
   end)
   return list
end

-- The readable report of RECORDS (a site's, a test's), the first LIMIT (default 10) of them, then
-- how many more there are: a CI message, not the whole report.
function M.records_text(records, limit)
   limit = limit or 10
   local parts, more = {}, {records = 0, blocks = 0, bytes = 0}
   for i, r in ipairs(records) do
      if i <= limit then
         parts[#parts + 1] = text.record_text(r)
      else
         more.records, more.blocks, more.bytes = more.records + 1, more.blocks + r.blocks, more.bytes + r.bytes
      end
   end
   local out = table.concat(parts, "\n"):gsub("%s+$", "")
   if more.records > 0 then
      out = out .. ("\n... and %d more records (%s in %s); see the JSON report"):format(more.records,
         text.plural(more.bytes, "byte"), text.plural(more.blocks, "block"))
   end
   return out
end

-- -- Locations -------------------------------------------------------------------------------

-- Is PATH in the project (relative, or under the working directory)?
local function in_project(path)
   local dir = current_dir()
   return path:sub(1, 1) ~= "/" or (dir and path:sub(1, #dir) == dir) or false
end

-- Where record R is in the sources: {file, line} of its innermost Lua frame, else of its first
-- C frame below the allocation function that has a file and a line; one that INSIDE(path)
-- accepts (default: a path in the project) when there is one. Nil when none is known.
function M.location(r, inside)
   inside = inside or in_project
   local first
   for _, f in ipairs(r.lua or EMPTY) do
      if present(f.source) and present(f.line) and f.source:sub(1, 1) ~= "[" and f.source:sub(1, 1) ~= "=" then
         local loc = {file = M.source(f.source), line = f.line}
         if inside(loc.file) then return loc end
         first = first or loc
      end
   end
   for i, f in ipairs(r.frames or EMPTY) do
      if i > 1 and present(f.file) and present(f.line) then
         local file = present(f.dir) and f.file:sub(1, 1) ~= "/" and (f.dir .. "/" .. f.file) or f.file
         local loc = {file = M.source(file), line = f.line}
         if inside(loc.file) then return loc end
         first = first or loc
      end
   end
   return first
end

return M
