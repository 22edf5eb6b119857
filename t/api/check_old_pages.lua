-- ljleak.check in a big heap, losing blocks at addresses the heap handed out long before (freed,
-- then given again): the walk for the blocks born since a snapshot reads only the pages of the
-- table where blocks were recorded since, so a block recorded again in an old page must be found
-- there: by the interpreter (first check; without the stamp of the table's full form, none is
-- found) and by compiled code (second: the loop is compiled after its first iterations, and
-- loses every 60th block). t/unit/table.c checks both forms' stamps alone. Prints the records of
-- each and how many blocks reused an old address, as JSON.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local N = 200000
local old = ffi.new("void *[?]", N)
for i = 0, N - 1 do old[i] = C.malloc(48 + (i % 8) * 16) end  -- about 20 MB: many leaves
for _ = 1, 5 do ljleak.check(function() C.free(C.malloc(64)) end) end  -- epochs go by

local reused, held = 0, {}
local function again(i)  -- old[i]'s block freed, and its size asked again: the same address
   local was = tonumber(ffi.cast("uintptr_t", old[i]))
   C.free(old[i])
   old[i] = nil
   local p = C.malloc(48 + (i % 8) * 16)           -- line 24
   if tonumber(ffi.cast("uintptr_t", p)) == was then reused = reused + 1 end
   return p
end

local interpreted = ljleak.check(function()
   for k = 0, 11 do
      local p = again(k * 16661)                   -- all over the heap
      if k % 4 == 0 then held[#held + 1] = p end   -- 3 kept in a live table: not lost
   end
end)
local lost = {}
local compiled = ljleak.check(function()
   for k = 0, 299 do
      local p = tonumber(ffi.cast("uintptr_t", again(1000 + k * 150)))  -- a page of the table further
      local keep = (k + 1) % 60 == 0 and 1 or 0                          -- each time; every 60th lost:
      lost[#lost + 1] = keep == 1 and p or nil
      C.free(ffi.cast("void *", p * math.min(1, (k + 1) % 60)))          -- free(NULL), no branch
   end
end)

local function brief(recs)
   local out = {}
   for _, r in ipairs(recs) do
      local f = r.lua[1] or {}
      out[#out + 1] = {kind = r.kind, blocks = r.blocks, bytes = r.bytes, line = f.line, ["function"] = f["function"],
                       approximate = f.approximate or false}
   end
   return out
end
io.write(cjson.encode({interpreted = brief(interpreted), compiled = brief(compiled), reused = reused}), "\n")
for _, p in ipairs(held) do C.free(p) end
for _, p in ipairs(lost) do C.free(ffi.cast("void *", p)) end
for i = 0, N - 1 do if old[i] ~= nil then C.free(old[i]) end end
