-- Tags: blocks carry the tag active when they were allocated; reports group by it.
local ffi = require "ffi"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); ]]
ljleak.tag("parser")
ffi.C.malloc(10)
ljleak.tag(nil)
ljleak.scope("lexer", function() ffi.C.malloc(20) end)
ffi.C.malloc(30)
