-- Workload (c): string building, table churn, ffi.new, and strdup/free.
local ffi = require "ffi"
ffi.cdef [[ char *strdup(const char *); void free(void *); ]]
local C = ffi.C
local N = tonumber(arg and arg[1]) or 6e5
local acc = 0
for i = 1, N do
   local parts = {}
   for j = 1, 8 do parts[j] = tostring(i * j) end
   local s = table.concat(parts, ",")
   local buf = ffi.new("char[?]", #s + 1)
   ffi.copy(buf, s)
   local d = C.strdup(buf)
   acc = acc + #ffi.string(d)
   C.free(d)
   local t = { a = i, b = s, c = { i, i + 1 } }
   acc = acc + #t.b
end
assert(acc > 0)
