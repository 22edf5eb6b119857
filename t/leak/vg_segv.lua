-- For --engine=valgrind: an invalid write of 4 bytes at address 16, which kills the program with
-- SIGSEGV (exit 139 under ljleak, the invalid write listed).
local ffi = require "ffi"
ffi.cast("int *", 16)[0] = 1
