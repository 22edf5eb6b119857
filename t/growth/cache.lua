-- ljleak.stable on a cache that keeps one 96-byte FFI block per call (line 10), then on a
-- finalizer closure that keeps its own cdata alive (line 15): both grow, by one block a call.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local cache = {}
local function remember(i) cache[i] = ffi.gc(C.malloc(96), C.free) end

local function finalized()
   local p
   p = ffi.gc(C.malloc(40), function() C.free(p) end)   -- the closure holds p: never collected
end

local out = {}
for name, fn in pairs {cache = remember, closure = finalized} do
   local ok, sites = ljleak.stable(fn, {iterations = 200, warmup = 20})
   local s = sites[1] or {lua = {}}
   out[name] = {ok = ok, n = #sites, line = (s.lua[1] or {}).line, source = (s.lua[1] or {}).source,
                blocks_per_iteration = s.blocks_per_iteration, bytes_per_iteration = s.bytes_per_iteration,
                fit = s.fit, generations = s.generations, frame = (s.frames or {})[1]}
end
out.cached = #cache
io.write(cjson.encode(out), "\n")
