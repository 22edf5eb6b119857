-- posix_memalign(64, 200) and aligned_alloc(256, 512), dropped: 2 blocks, 712 bytes.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_aligned()
