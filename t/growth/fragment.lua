-- Memory kept by the allocator, not a leak: each iteration needs a bigger transient peak (16 KiB
-- blocks, 128 KiB more each time), frees it all, and moves one 3000-byte block to the top of the
-- heap, so glibc can give none of the freed memory back. RSS grows; live bytes stay one block.
local ffi = require "ffi"
local cjson = require "cjson"
local ljleak = require "ljleak"
ffi.cdef [[ void *malloc(size_t); void free(void *); ]]
local C = ffi.C

local pin
local blocks = ffi.new("void *[?]", 8 * 64)
local function work(i)
   local n = 8 * i
   for j = 0, n - 1 do
      blocks[j] = C.malloc(16384)
      ffi.fill(blocks[j], 16384, 1)   -- touched: resident
   end
   local new = C.malloc(3000)   -- a size with no free chunk below: taken from the top
   if pin then C.free(pin) end
   pin = new
   for j = 0, n - 1 do C.free(blocks[j]) end
end

local ok, sites, mem = ljleak.stable(work, {iterations = 60, warmup = 6})
local a = mem.allocator or {}
io.write(cjson.encode({ok = ok, n = #sites, verdict = a.verdict, message = a.message,
                       rss_growth = a.rss_growth, live_growth = a.live_growth,
                       live = mem.live[60], fordblks = mem.fordblks[60]}), "\n")
C.free(pin)
