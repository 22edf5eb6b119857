-- ljleak's demo: a Lua program that drives a C library through the FFI and leaks twice:
-- once inside the C library (libwords.c forgets its strings), once in Lua (a malloc'd
-- buffer that nobody frees). Run it with `make demo`, or:
--   ./bin/ljleak run -- luajit examples/app.lua
local ffi = require "ffi"

ffi.cdef [[
typedef struct words words;
words *words_split(const char *text);
int words_count(const words *ws);
void words_free(words *ws);
void *malloc(size_t n);
void free(void *p);
]]

local root = arg[0]:match("^(.-)examples/[^/]+$") or ""
local lib = ffi.load(root .. "build/examples/libwords.so")

local function count_words(text)
   local ws = ffi.gc(lib.words_split(text), lib.words_free)  -- freed by the finalizer...
   return lib.words_count(ws)                                 -- ...but its strings leak
end

local function scratch(n)
   local buf = ffi.cast("char *", ffi.C.malloc(n))  -- never freed: no ffi.gc, no free
   ffi.fill(buf, n)
   return buf
end

local total = 0
for _, line in ipairs { "the quick brown fox", "jumps over", "the lazy dog" } do
   total = total + count_words(line)
end
scratch(256)
print(("counted %d words"):format(total))
