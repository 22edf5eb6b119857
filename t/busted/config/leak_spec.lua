-- One leaky test, for ljleak's helper loaded through a .busted file.
local ffi = require "ffi"
ffi.cdef [[ void *malloc(size_t); ]]

describe("configured", function()
   it("leaks", function() ffi.C.malloc(64) end)
end)
