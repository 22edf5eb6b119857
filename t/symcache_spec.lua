-- The symbolizer's disk cache (LJLEAK_CACHE): a run after the first names its frames from the cache,
-- exactly as libdw did; the cache is filed by build ID and follows the object's debug information
-- (a debug file installed later is used at once); LJLEAK_CACHE=0 keeps none. And the symbolizer
-- asks no debuginfod server (nor loads its client) unless DEBUGINFOD_URLS names one.
local h = require "t.helper"
local lfs = require "lfs"

local LIB = h.ROOT .. "/build/t/leak/libleaky.so"

-- `ljleak run --json -- luajit t/leak/lua_lines.lua a lib` with the cache in DIR and libleaky at
-- LIB_PATH; its records without their pids.
local function records(dir, lib_path)
   local r, code, err = h.ljleak_run({"luajit", "t/leak/lua_lines.lua", "a", "lib"}, nil,
                                     {env = {LJLEAK_CACHE = dir, LJLEAK_LEAKY_LIB = lib_path or LIB}})
   assert.are.equal(42, code, err)
   for _, rec in ipairs(r.leaks) do rec.pid = nil end
   return r.leaks
end

-- The frame of leak_malloc in RECS.
local function leak_malloc(recs)
   for _, rec in ipairs(recs) do
      for _, f in ipairs(rec.frames) do
         if f["function"] == "leak_malloc" then return f end
      end
   end
end

local function build_id(path)
   local _, out = h.run({"readelf", "-n", path})
   return assert(out:match("Build ID: (%x+)"))
end

local function files(dir)
   local t = {}
   for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." then t[#t + 1] = name end
   end
   table.sort(t)
   return t
end

describe("the symbolizer's disk cache", function()
   local dir
   before_each(function() dir = h.tmpdir() end)
   after_each(function() h.rmtree(dir) end)

   it("gives a later run the very frames libdw gave the first", function()
      local cache = dir .. "/cache"   -- made by the run
      local cold = records(cache)
      local f = leak_malloc(cold)
      assert.are.same({"leak_malloc", "libleaky.c", 17}, {f["function"], f.file, f.line})
      local names = files(cache)
      assert.is_true(#names >= 3)   -- luajit, libc, libleaky: one file per build ID
      for _, name in ipairs(names) do assert.matches("^%x+$", name) end
      assert.is_truthy(lfs.attributes(cache .. "/" .. build_id(LIB)))
      assert.are.same(cold, records(cache))
   end)

   it("is read: a run shows what the cache holds for its object", function()
      local cache = dir .. "/cache"
      records(cache)
      local path = cache .. "/" .. build_id(LIB)
      local text = assert(h.read_file(path))
      local doctored, n = text:gsub('"line":17', '"line":4242')
      assert.are.equal(1, n)
      h.write_file(path, doctored)
      assert.are.equal(4242, leak_malloc(records(cache)).line)
      -- under another key (another state of the debug information) the file is not used
      h.write_file(path, doctored:gsub("^(ljleak%-symcache %d+ %x+)", "%1 -"))
      assert.are.equal(17, leak_malloc(records(cache)).line)
   end)

   it("follows a separate debug file installed after the first run", function()
      local lib, debug = dir .. "/libleaky.so", dir .. "/libleaky.so.debug"
      assert.are.equal(0, (h.run({"objcopy", "--only-keep-debug", LIB, debug}, {env = h.UNTRACED})))
      assert.are.equal(0, (h.run({"objcopy", "--strip-debug", "--add-gnu-debuglink=" .. debug, LIB, lib},
                                 {env = h.UNTRACED})))
      assert(os.rename(debug, debug .. ".away"))
      local cache = dir .. "/cache"
      local f = leak_malloc(records(cache, lib))
      assert.are.same({"leak_malloc"}, {f["function"], f.file, f.line})   -- the symbol table only
      assert(os.rename(debug .. ".away", debug))   -- found beside the library, by its debuglink
      f = leak_malloc(records(cache, lib))
      assert.are.same({"leak_malloc", "libleaky.c", 17}, {f["function"], f.file, f.line})
   end)

   it("is not kept with LJLEAK_CACHE=0", function()
      local f = leak_malloc(records("0"))
      assert.are.equal(17, f.line)
      local cache = dir .. "/cache"
      local r, code = h.ljleak_run({"luajit", "t/leak/lua_lines.lua", "lib"}, nil,
                                   {env = {LJLEAK_CACHE = "0", XDG_CACHE_HOME = dir, HOME = dir}})
      assert.are.equal(42, code)
      assert.are.equal(17, leak_malloc(r.leaks).line)
      assert.is_nil(lfs.attributes(cache))
      assert.are.same({}, files(dir))
   end)

   it("keeps the inlined calls of an address: a later run shows the very inlined frames", function()
      local cache = dir .. "/cache"
      local function inlined()
         local r, code, err = h.fixture("inlined", nil, {env = {LJLEAK_CACHE = cache}})
         assert.are.equal(42, code, err)
         for _, rec in ipairs(r.leaks) do
            if rec.kind == "definite" then
               local fs = {}
               for i = 2, 4 do
                  local f = rec.frames[i]
                  fs[#fs + 1] = {f["function"], f.line, f.inlined or false}
               end
               return fs
            end
         end
      end
      local cold = inlined()
      assert.are.same({{"inline_make", 11, true}, {"inline_middle", 16, true}, {"leak_inlined", 22, false}}, cold)
      assert.are.same(cold, inlined())
      -- read from the cache: the line of inline_middle's call, doctored there, shows
      local path = cache .. "/" .. build_id(h.ROOT .. "/build/t/leak/libinline.so")
      local doctored, n = assert(h.read_file(path)):gsub('("line":)16([,}])', "%14216%2")
      assert.are.equal(1, n)
      h.write_file(path, doctored)
      assert.are.same({"inline_middle", 4216, true}, inlined()[2])
   end)

   it("stays under its size limit: the files no run used for longest go first, and dead runs' temporary files",
      function()
      local symbolize = require "ljleak.symbolize"
      local cache = dir .. "/cache"
      records(cache)
      local libfile = build_id(LIB)
      -- a run that reads a file touches it
      assert(lfs.touch(cache .. "/" .. libfile, 1000, 1000))
      records(cache)
      assert.is_true(lfs.attributes(cache .. "/" .. libfile, "modification") > os.time() - 600)
      -- pruning, alone: four files of 100 bytes, used at times 10, 40, 20, 30; two temporary files
      local now = os.time()
      for name, t in pairs({aa01 = 10, aa02 = 40, aa03 = 20, aa04 = 30}) do
         h.write_file(dir .. "/" .. name, ("x"):rep(100))
         assert(lfs.touch(dir .. "/" .. name, now - 1000 + t, now - 1000 + t))
      end
      h.write_file(dir .. "/aa05.123.tmp", "old")
      assert(lfs.touch(dir .. "/aa05.123.tmp", now - 3601, now - 3601))
      h.write_file(dir .. "/aa06.124.tmp", "being written")
      h.write_file(dir .. "/notes.txt", ("x"):rep(1000))   -- not the cache's: never counted nor removed
      assert.are.same({"aa05.123.tmp"}, symbolize.prune(dir, 400, now))   -- 400 bytes: nothing more
      assert.are.same({"aa01", "aa03"}, symbolize.prune(dir, 399, now))   -- down to 3/4 of 399
      assert.are.same({"aa02", "aa04", "aa06.124.tmp", "cache", "notes.txt"}, files(dir))
      assert.are.same({}, symbolize.prune(dir .. "/none", 0, now))
      -- a run that writes answers prunes: with a limit of 0, its own files go too
      local old_max = symbolize.CACHE_MAX_BYTES
      finally(function() symbolize.CACHE_MAX_BYTES = old_max end)
      local fresh = dir .. "/fresh"
      local s = symbolize.new({cache = fresh})
      local off = assert(tonumber(leak_malloc(records("0")).offset))
      assert.are.equal("leak_malloc", s:lookup(LIB, off)["function"])
      s:save()
      assert.are.same({libfile}, files(fresh))
      s:lookup(LIB, off + 1)
      symbolize.CACHE_MAX_BYTES = 0
      s:save()
      assert.are.same({}, files(fresh))
      s:close()
      assert.is_nil(next(s.symbolizers))   -- libdw's state freed
   end)
end)

describe("the symbolizer and debuginfod", function()
   -- A lookup in luajit (no separate debug information here), then whether the client library
   -- of debuginfod is loaded.
   local function debuginfod_loaded(env)
      local code, out, err = h.run({"luajit", "-e", [[
         local sym = assert(require("ljleak.core").symbolizer("/usr/bin/luajit"))
         sym:lookup(4096)
         local maps = io.open("/proc/self/maps"):read("*a")
         io.write(maps:find("libdebuginfod", 1, true) and "loaded" or "not loaded")]]},
         {env = {LUA_CPATH = h.ROOT .. "/build/?.so;;", DEBUGINFOD_URLS = env or false}})
      assert.are.equal(0, code, err)
      return out
   end

   it("loads no debuginfod client without DEBUGINFOD_URLS", function()
      assert.are.equal("not loaded", debuginfod_loaded())
   end)

   it("asks debuginfod servers when DEBUGINFOD_URLS names one", function()
      local installed = h.run({"luajit", "-e", "require('ffi').load('libdebuginfod.so.1')"}) == 0
      if not installed then return pending("needs libdebuginfod1") end
      assert.are.equal("loaded", debuginfod_loaded("http://127.0.0.1:9"))
   end)
end)
