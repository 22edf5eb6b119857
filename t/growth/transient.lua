-- ljleak.stable on a loop that allocates a lot and returns to the same live set: transient
-- blocks (freed at once, or by the collector), a ring of a random number of kept blocks, a
-- bounded cache that fills early and then only replaces, a buffer grown by realloc up to a cap.
-- Run 20 times in this one process: prints how many runs reported a growth (must be 0).
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void *realloc(void *, size_t); void free(void *); ]]
local C = ffi.C

local ring, cache, order = {}, {}, {}
local buf, cap = nil, 0

local function work(i)
   for _ = 1, 50 do C.free(C.malloc(math.random(1, 4000))) end
   for _ = 1, 20 do ffi.gc(C.malloc(64), C.free) end                  -- freed by the collector
   for j = 1, #ring do ring[j] = nil end
   for j = 1, math.random(0, 6) do ring[j] = ffi.gc(C.malloc(32 * j), C.free) end
   local key = i % 16 + 1                                             -- 16 entries, then reused
   if not cache[key] then
      cache[key] = ffi.gc(C.malloc(128), C.free)
      order[#order + 1] = key
   end
   if cap < 65536 and i % 3 == 0 then                                  -- grows to a cap, once
      cap = cap == 0 and 256 or cap * 2
      if buf then ffi.gc(buf, nil) end
      buf = ffi.gc(C.realloc(buf, cap), C.free)
   end
end

local alarms, details = 0, {}
for run = 1, 20 do
   math.randomseed(run)
   local ok, sites = ljleak.stable(work, {iterations = 200, warmup = 20})
   if not ok then
      alarms = alarms + 1
      details[#details + 1] = {run = run, line = sites[1].lua[1] and sites[1].lua[1].line,
                               bytes_per_iteration = sites[1].bytes_per_iteration, fit = sites[1].fit}
   end
end
io.write(cjson.encode({alarms = alarms, details = details}), "\n")
