-- ljleak's bootstrap, run first in every LuaJIT process under `ljleak run` (its LUA_INIT calls it
-- with the folder of ljleak's Lua modules and the path of ljleak.core; see ljleak.engine). A loader
-- finds ljleak's own modules there, whatever the program's package.path says; then ljleak.vm
-- attaches the tracker to the VM (Lua frames) and hooks busted. Other Lua interpreters skip it.
local dir, core = ...
if not jit then return end
table.insert(package.loaders, 2, function(name)
   if name == "ljleak.core" then return package.loadlib(core, "luaopen_ljleak_core") end
   if name == "ljleak" then name = "ljleak.init" end
   if name:match("^ljleak%.[%w_.]+$") then return loadfile(dir .. "/" .. name:gsub("%.", "/") .. ".lua") end
end)
pcall(require, "ljleak.vm")
