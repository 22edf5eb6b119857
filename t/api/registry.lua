-- Misuses of ffi.gc that the registry reports. Prints what ljleak.problems() and
-- ljleak.retained() say, as JSON; the detached block is left for the exit report.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

-- 1. A finalizer detached with ffi.gc(cd, nil), then the block is never freed.
local detached = ffi.gc(C.malloc(64), C.free)
ffi.gc(detached, nil)
detached = nil  -- luacheck: ignore 311

-- 2. Two finalizers for the same address: a double free waiting to happen.
local a = ffi.gc(C.malloc(24), C.free)
local b = ffi.gc(ffi.cast("char *", a), C.free)

-- 3. A finalizer that raises.
local c = ffi.gc(C.malloc(8), function(p) C.free(p) error("boom in finalizer") end)

-- 4. A finalizer that references its own cdata (LuaJIT issue 896): never collected.
local d
d = ffi.gc(C.malloc(16), function() C.free(d) end)

-- 5. A finalizer that frees memory malloc never handed out (a buffer in LuaJIT's own heap).
local buf = ffi.new("char[32]")
local e = ffi.gc(ffi.cast("void *", buf), C.free)

a, b, c, e = nil, nil, nil, nil  -- luacheck: ignore 311
local ok = pcall(collectgarbage)
collectgarbage()
local out = {problems = {}, retained = {}, gc_error = not ok}
for _, p in ipairs(ljleak.problems()) do
   out.problems[#out.problems + 1] = {kind = p.kind, line = p.lua[1] and p.lua[1].line}
end
for _, r in ipairs(ljleak.retained()) do
   out.retained[#out.retained + 1] = {kind = r.kind, line = r.lua[1].line, ctype = r.ctype}
end
io.write(cjson.encode(out), "\n")
