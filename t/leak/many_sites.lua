-- 50 lines that each leak one block (11 to 60 bytes): 50 distinct stacks.
local ffi = require "ffi"
ffi.cdef "void *malloc(size_t);"
local lines = {"local C = require('ffi').C"}
for i = 1, 50 do lines[#lines + 1] = ("C.malloc(%d)"):format(10 + i) end
assert(loadstring(table.concat(lines, "\n"), "=many_sites"))()
