-- ljleak.check_since in a program that never declares ffi.C.free: blocks born during the check
-- that the C side's own roots hold (putenv's string, in libc's environ array) are not lost, and
-- telling so needs no collection (a test of a busted suite pays milliseconds for one). Prints, as
-- JSON, the records and whether a Lua object that was garbage at the check got collected by it;
-- then loses 40 bytes (line 24) for a check that must still collect and find them.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ char *strdup(const char *); int putenv(char *); void *malloc(size_t); ]]
local C = ffi.C

local collected = false
local function garbage()
   local p = newproxy(true)
   getmetatable(p).__gc = function() collected = true end
end

local s = ljleak.snapshot()
C.putenv(C.strdup("LJLEAK_CHECK_HELD=1"))   -- libc keeps the string (and its new environ array)
garbage()
local held = ljleak.check_since(s)
local held_collected = collected

local lost = ljleak.check(function() C.malloc(40) end)   -- line 24
local brief = {}
for _, r in ipairs(lost) do
   brief[#brief + 1] = {kind = r.kind, blocks = r.blocks, bytes = r.bytes, line = r.lua[1] and r.lua[1].line}
end
print(cjson.encode({held = #held, held_collected = held_collected, lost = brief}))
