-- Exit-scan workload: N blocks of 32 bytes live at exit, all from one site (a compiled loop) and
-- held through one array block that a Lua global keeps (reachable: os.exit leaves the Lua state
-- open), then 1000 more dropped (lost, but for those a dead cdata still holds). The exit check reads every live
-- block; its report has a few records whatever N is.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); ]]
local C = ffi.C
local N = tonumber(arg and arg[1]) or 1e6
local held = ffi.cast("void **", C.malloc(N * ffi.sizeof("void *")))
for i = 0, N - 1 do held[i] = C.malloc(32) end
for _ = 1, 1000 do C.malloc(48) end
_G.HELD = held
os.exit(0)
