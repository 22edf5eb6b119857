-- ljleak.check while the Lua state is open: a pointer held only by a live cdata is not a leak,
-- the same pointer dropped is. Prints the records as JSON.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local function summary(recs)
   local out = {}
   for _, r in ipairs(recs) do
      out[#out + 1] = {kind = r.kind, blocks = r.blocks, bytes = r.bytes,
                       line = r.lua[1] and r.lua[1].line, fn = r.frames[1]["function"]}
   end
   return out
end

local holder = {}
local held = ljleak.check(function()
   holder.p = C.malloc(48)           -- kept in a live cdata: reachable
end)
local dropped = ljleak.check(function()
   local p = C.malloc(48)            -- line 23: dropped, and the cdata is collected
   p = nil                           -- luacheck: ignore 311
end)
local freed = ljleak.check(function()
   C.free(C.malloc(48))
end)
io.write(cjson.encode({held = summary(held), dropped = summary(dropped), freed = summary(freed)}), "\n")
C.free(holder.p)
