#!/bin/sh
# Two luajit processes started by one shell script, each leaking: 100 and 200 bytes.
# expect: exit 42; total definite 2 300; pids definite 2
set -e
dir=$(dirname "$0")
luajit "$dir/malloc_dropped.lua"
luajit -e 'local ffi = require "ffi" ffi.cdef "void *malloc(size_t);" ffi.C.malloc(200)'
