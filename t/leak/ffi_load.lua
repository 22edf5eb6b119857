-- A leak inside a C library called through ffi.load: 123 bytes lost in leak_malloc.
-- expect: exit 42; total definite 1 123; one definite leak_malloc file=libleaky%.c line=17 object=libleaky%.so lua=5
-- expect[valgrind]: one definite leak_malloc at=2
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_malloc(123)
