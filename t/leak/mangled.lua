-- A leak in a function with a C++ linkage name: 77 bytes lost in thing::make(unsigned long)
-- (_ZN5thing4makeEm in build/t/leak/libmangled.so).
-- expect: exit 42; total definite 1 77; one definite thing::make%(unsigned.long%) bytes=77
local ffi = require "ffi"
ffi.cdef [[void *thing_make(size_t n) __asm__("_ZN5thing4makeEm");]]
local root = arg[0]:match("^(.-)t/leak/[^/]+$") or ""
local lib = ffi.load(root .. "build/t/leak/libmangled.so")
local p = lib.thing_make(77)
p = nil
