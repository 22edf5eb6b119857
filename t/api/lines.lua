-- The Lua line of each allocation, in nested functions, with the JIT on or off (-joff).
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); ]]
local C = ffi.C

local function inner(n)
   local p = C.malloc(n)   -- line 7
   return p
end

local function outer()
   local p = inner(111)    -- line 12
   return p
end

outer()
