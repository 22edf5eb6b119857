-- Per-process workload: 20 short LuaJIT workers, one after another, each allocating and freeing
-- 1000 blocks and leaking one (each pays a start, an exit check and a raw report; the whole
-- command then symbolizes every process's stacks).
local WORKER = "local ffi = require 'ffi' ffi.cdef 'void *malloc(size_t); void free(void *);' "
   .. "for i = 1, 1000 do ffi.C.free(ffi.C.malloc(i)) end ffi.C.malloc(10)"
local N = tonumber(arg and arg[1]) or 20
for _ = 1, N do
   local status = os.execute("luajit -e \"" .. WORKER .. "\"")
   assert(status == 0 or status == true, "a worker failed")
end
