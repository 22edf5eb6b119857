-- Inside nginx under `ljleak test-nginx`: run in every Lua state that nginx opens (the tracker runs
-- LJLEAK_LUA_BOOT right after luaL_openlibs), one per configuration it loads: at start, and again
-- in the master at each HUP reload. Tags what the process allocates from then on with a hash of
-- that configuration file, which the CLI maps back to the Test::Nginx block that wrote it.
local bit = require "bit"

local M = {}

-- The tag's prefix; the rest is M.hash of the file.
M.TAG = "ljleak-nginx-conf "

-- A hash of TEXT, "LENGTH-HEX": the same in nginx and in the CLI (both run this).
function M.hash(text)
   local h = 0
   for i = 1, #text do h = bit.tobit(h * 31 + text:byte(i)) end
   return ("%d-%s"):format(#text, bit.tohex(h))
end

-- M.hash of the file at PATH, or nil.
function M.file_hash(path)
   local f = path and io.open(path, "rb")
   if not f then return nil end
   local text = f:read("*a")
   f:close()
   return text and M.hash(text)
end

-- Called with nginx's configuration file (as nginx was started with it) in each new Lua state.
function M.boot(conf)
   local vm = require "ljleak.vm"
   local hash = vm.active() and M.file_hash(conf)
   if not hash then return end
   local C = vm.ffi.C
   C.ljleak_ctx_set(C.ljleak_ctx_make(0, M.TAG .. hash, nil))
end

return M
