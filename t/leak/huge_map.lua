-- A 128 GiB MAP_NORESERVE reservation the program never touches but for one page, where it keeps
-- the only pointer to a 640-byte block: reachable, and the scan reads that page, not 128 GiB.
-- engines: tracker (the tracker's scan of resident pages only)
-- expect: exit 0; total definite 0 0; some reachable bytes=640
local ffi = require "ffi"
ffi.cdef [[
void *malloc(size_t);
void *mmap(void *, size_t, int, int, int, long);
]]
local PROT_RW, MAP_PRIVATE_ANON_NORESERVE = 3, 0x02 + 0x20 + 0x4000
local size = 128 * 2 ^ 30
local base = ffi.C.mmap(nil, size, PROT_RW, MAP_PRIVATE_ANON_NORESERVE, -1, 0)
assert(ffi.cast("intptr_t", base) ~= -1, "mmap failed")
local slot = ffi.cast("void **", ffi.cast("char *", base) + 64 * 2 ^ 30)
slot[0] = ffi.C.malloc(640)
KEEP = base
os.exit(0)
