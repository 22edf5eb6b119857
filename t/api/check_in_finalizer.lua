-- ljleak.check called inside an ffi.gc finalizer: its own work frees memory it allocated there,
-- which is no bad free; the check still finds what the checked function lost. Prints JSON.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local result
local function finalize(p)
   local recs = ljleak.check(function()
      local q = C.malloc(33)          -- line 12: dropped
      q = nil
   end)
   result = {n = #recs, bytes = recs[1] and recs[1].bytes, line = recs[1] and recs[1].lua[1].line}
   C.free(p)
end

local x = ffi.gc(C.malloc(16), finalize)
x = nil
collectgarbage()
collectgarbage()
local kinds = {}
for _, p in ipairs(ljleak.problems()) do kinds[#kinds + 1] = p.kind end
io.write(cjson.encode({check = result, problems = kinds}), "\n")
