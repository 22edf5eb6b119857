-- A program whose leaks its arguments choose, for the CI specs (baselines, shards, JUnit, GitHub
-- Actions): each argument NAME=N calls the function NAME N times. parse() loses 100 bytes a call
-- (ffi.C.malloc), render() 200, spill() 400, cache() 300 in a C library (leak_malloc,
-- libleaky.c), tidy() nothing. LJLEAK_LEAKY_LIB: libleaky.so, when this file is run elsewhere.
local ffi = require "ffi"
ffi.cdef [[
void *malloc(size_t n);
void free(void *p);
void leak_malloc(size_t n);
]]
local C = ffi.C
local here = arg[0]:match("^(.-)[^/]*$")
local leaky = ffi.load(os.getenv("LJLEAK_LEAKY_LIB") or here .. "../../build/t/leak/libleaky.so")

local function parse() C.malloc(100) end
local function render() C.malloc(200) end
local function spill() C.malloc(400) end
local function cache() leaky.leak_malloc(300) end
local function tidy() C.free(C.malloc(50)) end

for _, a in ipairs(arg) do
   local name, n = a:match("^(%a+)=(%d+)$")
   for _ = 1, tonumber(n) do
      if name == "parse" then parse()
      elseif name == "render" then render()
      elseif name == "spill" then spill()
      elseif name == "cache" then cache()
      elseif name == "tidy" then tidy()
      else error("unknown action " .. a) end
   end
end
