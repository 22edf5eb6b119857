-- The Lua module of t/growth_spec.lua's nginx: grow() appends one 64-byte FFI block per request
-- to a module-level table (line 11); quiet() allocates and frees as much.
-- luacheck: globals ngx
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C
local M = {}
local kept = {}

function M.grow()
   kept[#kept + 1] = ffi.gc(C.malloc(64), C.free)
   ngx.say("kept ", #kept)
end

function M.quiet()
   local p = ffi.gc(C.malloc(64), C.free)
   C.free(ffi.gc(p, nil))
   ngx.say("ok")
end

return M
