-- The FFI ABI is declared once in C (csrc/ljleak.h, between its BEGIN and END lines) and once in
-- Lua (the cdef of lua/ljleak/vm.lua): the two must declare the same, and the libraries must
-- export what is declared.
local h = require "t.helper"

-- The declarations in C text: comments dropped, blanks normalized, split at each top-level ';'.
local function declarations(text)
   text = text:gsub("/%*.-%*/", " "):gsub("//[^\n]*", " "):gsub("%s+", " ")
   text = text:gsub(" ?([%*%(%),;{}%[%]]) ?", "%1")
   local out, depth, start = {}, 0, 1
   for i = 1, #text do
      local c = text:sub(i, i)
      if c == "{" then depth = depth + 1
      elseif c == "}" then depth = depth - 1
      elseif c == ";" and depth == 0 then
         local d = text:sub(start, i):gsub("^ ", "")
         out[d] = true
         start = i + 1
      end
   end
   return out
end

local function abi_of_header()
   local text = assert(h.read_file(h.ROOT .. "/csrc/ljleak.h"))
   return declarations(assert(text:match("/%* BEGIN FFI ABI %*/(.-)/%* END FFI ABI %*/")))
end

-- Declarations of ljleak's own names in the cdef blocks of a Lua file.
local function abi_of_lua(path)
   local all = {}
   for _, block in assert(h.read_file(path)):gmatch("ffi%.cdef%s*%[(=*)%[(.-)%]%1%]") do
      for d in pairs(declarations(block)) do all[d] = true end
   end
   return all
end

local function ljleak_only(decls)
   local out = {}
   for d in pairs(decls) do
      if d:find("ljleak_", 1, true) then out[d] = true end
   end
   return out
end

local function sorted(set)
   local t = {}
   for k in pairs(set) do t[#t + 1] = k end
   table.sort(t)
   return t
end

-- Functions of the set of declarations DECLS.
local function functions(decls)
   local out = {}
   for d in pairs(decls) do
      local name = d:match("([%w_]+)%(")
      if name and not d:match("^typedef") then out[name] = true end
   end
   return out
end

local function exported(lib)
   local code, out = h.run({"nm", "-D", "--defined-only", h.ROOT .. "/build/ljleak/" .. lib})
   assert.are.equal(0, code)
   local names = {}
   for name in out:gmatch(" T (ljleak_[%w_]+)") do names[name] = true end
   return names
end

describe("the FFI ABI", function()
   it("is declared alike in csrc/ljleak.h and in lua/ljleak/vm.lua's cdef", function()
      local c = abi_of_header()
      assert.is_true(next(c) ~= nil)
      assert.are.same(sorted(c), sorted(ljleak_only(abi_of_lua(h.ROOT .. "/lua/ljleak/vm.lua"))))
   end)

   it("is exported by the libraries: the tracker all but ljleak_vg_*, the Valgrind library those", function()
      local declared = functions(abi_of_header())
      local tracker, vg = exported("libljleak.so"), exported("libljleak_vg.so")
      local want_tracker, want_vg = {}, {}
      for name in pairs(declared) do
         if name:match("^ljleak_vg_") then want_vg[name] = true else want_tracker[name] = true end
      end
      assert.are.same(sorted(want_tracker), sorted(tracker))
      for name in pairs(want_vg) do assert.is_true(vg[name], name) end
      for name in pairs(vg) do assert.is_true(declared[name], name) end
   end)

   it("check notices a declaration that differs", function()
      local a = declarations("int ljleak_x(int a);\ntypedef struct s { int a; } s;")
      local b = declarations("int  ljleak_x( int a ) ;typedef struct s {int a;} s;")
      assert.are.same(sorted(a), sorted(b))
      local c = declarations("int ljleak_x(long a);")
      assert.are_not.same(sorted(a), sorted(c))
   end)
end)
