-- posix_memalign(64, 200) and aligned_alloc(256, 512), dropped: 2 blocks, 712 bytes.
-- expect: total definite 2 712; records definite leak_aligned 2
-- expect[tracker]: some definite leak_aligned bytes=200 alloc=posix_memalign
-- expect[tracker]: some definite leak_aligned bytes=512 alloc=aligned_alloc
-- expect[valgrind]: some definite leak_aligned bytes=200 alloc=memalign (Valgrind 3.19 names both so)
-- expect[valgrind]: some definite leak_aligned bytes=512 alloc=memalign
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_aligned()
