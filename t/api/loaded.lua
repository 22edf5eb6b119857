-- What the in-process side loads: after require "ljleak", a check and a snapshot's diff, the
-- modules of the CLI's own work (files, processes, XML, the report files) are not loaded.
local ffi = require "ffi"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); ]]

local s = ljleak.snapshot()
ljleak.check(function() ffi.C.malloc(8) end)
s:diff()
local names = {}
for name in pairs(package.loaded) do
   if name:match("^lfs") or name:match("^posix") or name == "lxp" or name == "argparse"
      or name:match("^ljleak%.") and not ({["ljleak.vm"] = 1, ["ljleak.init"] = 1, ["ljleak.model"] = 1,
         ["ljleak.registry"] = 1, ["ljleak.raw"] = 1, ["ljleak.symbolize"] = 1, ["ljleak.text"] = 1,
         ["ljleak.json"] = 1, ["ljleak.const"] = 1, ["ljleak.util"] = 1, ["ljleak.core"] = 1,
         ["ljleak.growth"] = 1})[name] then
      names[#names + 1] = name
   end
end
table.sort(names)
io.write("loaded: ", table.concat(names, " "), "\n")
