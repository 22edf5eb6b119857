-- Contexts (tags) on allocations from compiled code: one hot loop switches between two tags at
-- every iteration through the tracker's FFI API (what ljleak.tag calls, but compiled into the
-- trace), so the trace and the return address of its malloc stay the same while the tag changes.
-- Each block carries the tag active when it was allocated: 500 blocks of 8 bytes each.
local ffi = require "ffi"
require "ljleak"   -- declares the tracker's API (csrc/ljleak.h)
ffi.cdef [[ void *malloc(size_t); ]]
local C = ffi.C
local ctx = {C.ljleak_ctx_make(0, "even", nil), C.ljleak_ctx_make(0, "odd", nil)}
assert(jit.status(), "the JIT must be on")
for i = 1, 1000 do
   C.ljleak_ctx_set(ctx[i % 2 + 1])
   C.malloc(8)
end
C.ljleak_ctx_set(0)
assert(require("jit.util").traceinfo(1), "the loop must have been compiled")
