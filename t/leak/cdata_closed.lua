-- The same 77-byte block kept in a Lua table, but the program ends normally: lua_close frees
-- the table, so the block is definitely lost.
-- expect: exit 42; total definite 1 77
-- expect[tracker]: lua_state closed
local ffi = require "ffi"
dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
KEEP = { ffi.C.malloc(77) }
