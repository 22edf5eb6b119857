-- Snapshots: blocks born between two snapshots and still live, grouped by stack.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local keep = {}
local s1 = ljleak.snapshot()
for i = 1, 10 do keep[i] = C.malloc(100) end   -- line 10: 10 blocks, 1000 bytes, persistent
for _ = 1, 5 do C.free(C.malloc(7)) end        -- transient: gone by the diff
local s2 = ljleak.snapshot()
keep[11] = C.malloc(5)                         -- after s2: not in s1:diff(s2)
local d = s1:diff(s2)
local now = s1:diff()
io.write(cjson.encode({blocks = d.blocks, bytes = d.bytes, groups = #d, line = d[1].lua[1].line,
                       now_blocks = now.blocks, now_bytes = now.bytes}), "\n")
for i = 1, 11 do C.free(keep[i]) end
