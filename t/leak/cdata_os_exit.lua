-- A 77-byte block whose only pointer is a cdata in a Lua table, and os.exit(0) without closing
-- the state: the Lua heap is still there, so the block is reachable, not lost.
-- expect: exit 0; total definite 0 0; some reachable bytes=77 alloc=malloc
-- expect[tracker]: lua_state open
local ffi = require "ffi"
dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
KEEP = { ffi.C.malloc(77) }
os.exit(0)
