-- Lua frames through every kind of call, each leak's size telling it apart: a local function, a
-- method, a global, one function under two names on one line (11 and 12 bytes), pcall between
-- Lua frames (13), a metamethod (6: the key's length), a coroutine (14), a vararg function (53:
-- its argument count + 50). t/luawalk_spec.lua compares every frame, names included, with what
-- lua_getstack gives; here, the first Lua frame of each.
-- expect: exit 42; total definite 6 109; some definite bytes=11 lua=12; some definite bytes=12 lua=12
-- expect: some definite bytes=13 lua=12; some definite bytes=6 lua=12; some definite bytes=14 lua=12
-- expect: some definite bytes=53 lua=12
local ffi = require "ffi"
ffi.cdef "void *malloc(size_t);"
local C = ffi.C
local function leaf(n) local p = C.malloc(n) return p end
local M = {}
function M.meth(_, n) local p = leaf(n) return p end
rawset(_G, "glob", function(n) local p = M:meth(n) return p end)
local alias1, alias2 = glob, glob   -- luacheck: ignore 113
local t = setmetatable({}, {__index = function(_, k) local p = leaf(#k) return p end})
alias1(11) alias2(12)
pcall(glob, 13)   -- luacheck: ignore 113
local _ = t.abcdef
coroutine.wrap(function() leaf(14) end)()
local _ = (function(...) local p = leaf(select("#", ...) + 50) return p end)(1, 2, 3)
