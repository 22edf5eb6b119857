-- The symbolizer (ljleak.core's, through libdw) names a frame's function, file and line in an
-- object whichever compiler built it: with no .debug_aranges (clang writes none by itself),
-- libdw cannot find the compile unit of an address, and the symbolizer searches the units. The
-- same holds for the chain of inlined calls at an address.
local h = require "t.helper"

local function build(cc, flags, dir, lib)
   lib = lib or "libleaky"
   local out = ("%s/%s-%s.so"):format(dir, lib, cc)
   local argv = {cc, "-O0", "-g", "-fPIC", "-shared", "-o", out}
   for _, f in ipairs(flags) do argv[#argv + 1] = f end
   argv[#argv + 1] = h.ROOT .. "/t/leak/" .. lib .. ".c"
   local code, _, err = h.run(argv, {env = h.UNTRACED})
   assert.are.equal(0, code, err)
   return out
end

-- The address of the call to malloc in leak_malloc (libleaky.c:17), from the object's symbols.
local function lookup(path)
   local code, out = h.run({"nm", path})
   assert.are.equal(0, code)
   local addr = assert(tonumber(out:match("(%x+) T leak_malloc\n"), 16))
   local sym = assert(require("ljleak.core").symbolizer(path))
   -- the line of each address of leak_malloc's first 64 bytes: its body's lines
   local lines = {}
   for off = 0, 63 do
      local fn, file, line = sym:lookup(addr + off)
      if fn == "leak_malloc" and file then lines[line] = file:match("[^/]*$") end
   end
   return lines, sym
end

local function has_aranges(path)
   local _, out = h.run({"readelf", "-S", path})
   return out:find(".debug_aranges", 1, true) ~= nil
end

describe("the symbolizer", function()
   local dir
   setup(function() dir = h.tmpdir() end)
   teardown(function() h.rmtree(dir) end)

   it("gives file and line in a library clang built without .debug_aranges", function()
      local path = build("clang", {}, dir)
      assert.is_false(has_aranges(path))
      local lines = lookup(path)
      assert.are.equal("libleaky.c", lines[17])
   end)

   it("gives the same with gcc's .debug_aranges, and with clang's -gdwarf-aranges", function()
      local gcc = build("gcc", {}, dir)
      assert.is_true(has_aranges(gcc))
      assert.are.equal("libleaky.c", lookup(gcc)[17])
      local clang = build("clang", {"-gdwarf-aranges"}, dir)
      assert.is_true(has_aranges(clang))
      assert.are.equal("libleaky.c", lookup(clang)[17])
   end)

   -- leak_inlined's call to malloc (libinline.c:11) is in inline_make, inlined into inline_middle
   -- (at line 16), inlined into leak_inlined (at line 22).
   for _, cc in ipairs({"gcc", "clang"}) do
      it("gives the inlined calls at an address in a library " .. cc .. " built", function()
         local path = build(cc, {}, dir, "libinline")
         assert.are.equal(cc == "gcc", has_aranges(path))
         local code, out = h.run({"nm", path})
         assert.are.equal(0, code)
         local addr = assert(tonumber(out:match("(%x+) T leak_inlined\n"), 16))
         local sym = assert(require("ljleak.core").symbolizer(path))
         local found
         for off = 0, 95 do
            local chain = sym:inlines(addr + off)
            if chain and chain[1]["function"] == "inline_make" and (sym:lookup(addr + off)) == "leak_inlined" then
               found = chain
               for _, f in ipairs(chain) do f.file = f.file and f.file:match("[^/]*$") end
            end
         end
         assert.are.same({{["function"] = "inline_make"},
                          {["function"] = "inline_middle", file = "libinline.c", line = 16},
                          {["function"] = "leak_inlined", file = "libinline.c", line = 22}}, found)
         assert.is_nil(sym:inlines(addr))   -- leak_inlined's first instruction: no inlined code
      end)
   end
end)

-- The raw report's text of t/leak/lua_lines.lua (its `lib` leak), run with the tracker.
local function lua_lines_raw()
   local dir = h.tmpdir()
   local code, _, err = h.run({"luajit", "t/leak/lua_lines.lua", "lib"},
      {env = {LD_PRELOAD = h.ROOT .. "/build/ljleak/libljleak.so", LJLEAK_DIR = dir}})
   assert.are.equal(0, code, err)
   local text
   for name in require("lfs").dir(dir) do
      if name:match("%.raw$") then text = h.read_file(dir .. "/" .. name) end
   end
   h.rmtree(dir)
   return assert(text, "no raw report")
end

describe("the frames of a stack", function()
   it("end at main, and those below it are named from the symbol table, never looked up in DWARF", function()
      local symbolize = require "ljleak.symbolize"
      local proc = assert(require("ljleak.raw").parse(lua_lines_raw()))
      local sym = symbolize.new({})
      local libc, frames
      for _, site in pairs(proc.sites) do
         local last = site.frames[#site.frames - 1]
         local path = last and last.module and proc.modules[last.module].path
         if path and path:match("/libc%.so") then   -- main <- __libc_start_call_main <- ... <- _start
            libc, frames = path, sym:frames(proc, site)
            break
         end
      end
      assert.is_truthy(libc)
      assert.are.equal("main", frames[#frames]["function"])
      assert.are.same({}, sym.answers[libc] or {})   -- no line looked up in libc
      local below = 0
      for _, name in pairs(sym.names[libc]) do
         if name == "__libc_start_call_main" or name == "__libc_start_main" then below = below + 1 end
      end
      assert.is_true(below >= 1)
   end)
end)

describe("symbolizing ahead", function()
   it("gives the report built afterwards the same frames, looked up before it was built", function()
      local raw = require "ljleak.raw"
      local model = require "ljleak.model"
      local format = require "ljleak.format"
      local symbolize = require "ljleak.symbolize"
      local text = lua_lines_raw()
      local function report(ahead)
         local proc = assert(raw.parse(text))
         local sym = symbolize.new({tracker = h.ROOT .. "/build/ljleak/libljleak.so"})
         local looked_up = 0
         if ahead then
            model.symbolize_ahead(proc, sym)
            for _ in pairs(sym.of_raw) do looked_up = looked_up + 1 end
         end
         local json = format.format(model.build({proc}, {command = {"luajit"}, exit_status = 0, symbolizer = sym}),
                                    "json")
         sym:close()   -- libdw's state freed now, not when collected
         return json, looked_up
      end
      local plain = report(false)
      local ahead, looked_up = report(true)
      assert.is_true(looked_up > 0)
      assert.are.equal(plain, ahead)
      assert.matches('"function": "main"', plain, 1, true)
   end)
end)
