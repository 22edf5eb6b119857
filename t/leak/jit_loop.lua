-- A JIT-hot loop: 3000 mallocs of 24 bytes, every third freed: exactly 2000 blocks, 48000 bytes.
-- options[valgrind]: --jit=on
-- expect: exit 42; total definite 2000 48000; alloc_all definite malloc
-- expect[valgrind]: jit_stacks definite 100
local ffi = require "ffi"
dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
local C = ffi.C
assert(jit.status(), "the JIT must be on")
for i = 1, 3000 do
   local p = C.malloc(24)
   if i % 3 == 0 then C.free(p) end
end
assert(require("jit.util").traceinfo(1), "the loop must have been compiled")
