-- A 99-byte block whose only pointer was in a cdata that has been collected (its stale copy
-- is still in LuaJIT's freed memory), then os.exit(0) with the state open: the block is lost.
-- engines: tracker (raw Valgrind, scanning the whole arena, may call the 99 bytes reachable)
-- expect: exit 42; total definite 1 99; some reachable bytes=77 lua=11
local ffi = require "ffi"
dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
local function drop() local p = ffi.C.malloc(99) return p ~= nil end
assert(drop())
collectgarbage()
collectgarbage()
KEEP = { ffi.C.malloc(77) }  -- and one that a live cdata still holds
os.exit(0)
