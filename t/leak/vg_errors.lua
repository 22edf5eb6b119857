-- Memory errors that only Valgrind sees (for --engine=valgrind; natively the double free would
-- abort): three reads of a freed int (one error, counted 3 times), then the same block freed twice.
local ffi = require "ffi"
dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
local C = ffi.C
local p = ffi.cast("int *", C.malloc(16))
C.free(p)
local sum = 0
for _ = 1, 3 do sum = sum + p[1] end
C.free(p)
if os.getenv("VG_ERRORS_KILL") then
   -- Killed from another process before Valgrind can finish its report (a kill() of itself would
   -- go through Valgrind, which would write its report first).
   ffi.cdef "int getpid(void);"
   os.execute(("kill -KILL %d"):format(C.getpid()))
end
