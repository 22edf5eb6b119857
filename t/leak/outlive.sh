#!/bin/sh
# A luajit started in the background that outlives this script, then leaks 321 bytes: ljleak
# waits for it, and its report is part of the run's.
# engines: tracker (the tracker's wait for processes that outlive the command)
# expect: exit 42; total definite 1 321
( sleep 0.5; exec luajit -e 'local ffi = require "ffi" ffi.cdef "void *malloc(size_t);" ffi.C.malloc(321)' ) &
exit 0
