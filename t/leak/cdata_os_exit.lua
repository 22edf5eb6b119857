-- A 77-byte block whose only pointer is a cdata in a Lua table, and os.exit(0) without closing
-- the state: the Lua heap is still there, so the block is reachable, not lost.
local ffi = require "ffi"
dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
KEEP = { ffi.C.malloc(77) }
os.exit(0)
