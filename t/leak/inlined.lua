-- A leak in inlined code: malloc called by inline_make (libinline.c:11), inlined into
-- inline_middle at line 16, itself inlined into leak_inlined at line 22. Each inlined function is
-- a frame of its own, as Valgrind shows them, with the line of the call inside its caller.
-- expect: exit 42; total definite 1 40; one definite inline_make bytes=40 at=2 line=11 inlined=1
-- expect: one definite inline_middle at=3 line=16 inlined=1; one definite leak_inlined at=4 line=22 inlined=0
local ffi = require "ffi"
ffi.cdef "void leak_inlined(size_t n);"
local root = arg[0]:match("^(.-)t/leak/[^/]+$") or ""
ffi.load(root .. "build/t/leak/libinline.so").leak_inlined(40)
