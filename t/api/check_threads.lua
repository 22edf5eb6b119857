-- ljleak.check while another thread (started by C code) allocates and frees all the time: the
-- check stops it, scans its stack (the blocks it holds are not lost), and lets it go on.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "../leak/leaky.lua")
local C = ffi.C

assert(leaky.churn_start() == 0)
local results = {}
for i = 1, 5 do
   local recs = ljleak.check(function()
      local p = C.malloc(1000 + i)   -- line 13: dropped
      p = nil
   end)
   local out = {}
   for _, r in ipairs(recs) do out[#out + 1] = {kind = r.kind, bytes = r.bytes, line = r.lua[1] and r.lua[1].line} end
   results[i] = out
end
assert(leaky.churn_stop_and_join() == 0)
io.write(cjson.encode(results), "\n")
