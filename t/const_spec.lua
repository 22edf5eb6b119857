-- Constants shared by C and Lua are declared once on each side (csrc/lk_def.h, lua/ljleak/const.lua)
-- and must agree: leak kinds, allocation functions, stack depths, environment variables.
local h = require "t.helper"
local const = require "ljleak.const"

local header = assert(h.read_file(h.ROOT .. "/csrc/lk_def.h"))

-- The names of the X-macro list NAME in the header, in order.
local function xlist(name)
   local body = assert(header:match("#define " .. name .. "%(_%)(.-[^\\])\n"), name)
   local out = {}
   for text in body:gmatch('_%([%w_]+, "([^"]*)"%)') do out[#out + 1] = text end
   return out
end

local function number(name)
   return tonumber((assert(header:match("#define " .. name .. " (%d+)"), name)))
end

local function set(list)
   local s = {}
   for _, v in ipairs(list) do s[v] = true end
   return s
end

describe("constants shared by C and Lua", function()
   it("name the same allocation functions, in the same order", function()
      assert.are.same(xlist("LK_ALLOC_FNS"), const.ALLOC_FNS)
   end)

   it("name the same leak kinds (C also has its internal unreached and gone)", function()
      local c = set(xlist("LK_KINDS"))
      assert.is_true(c.unreached and c.gone)
      c.unreached, c.gone = nil, nil
      assert.are.same(c, set(const.KINDS))
   end)

   it("have the same stack depths", function()
      assert.are.same({number("LK_DEPTH_DEFAULT"), number("LK_MAXDEPTH"), number("LK_LUA_DEPTH_DEFAULT"),
                       number("LK_LUA_DEPTH_MAX")},
                      {const.DEPTH_DEFAULT, const.DEPTH_MAX, const.LUA_DEPTH_DEFAULT, const.LUA_DEPTH_MAX})
   end)

   it("name each environment variable the tracker reads as Lua does", function()
      local n = 0
      for key, value in header:gmatch('#define LK_ENV_([%w_]+) "([^"]+)"') do
         assert.are.equal(value, const.ENV[key], key)
         n = n + 1
      end
      assert.is_true(n >= 6)
   end)

   it("are the only spelling of those variables in the C sources and the Lua modules", function()
      local lfs = require "lfs"
      for name in lfs.dir(h.ROOT .. "/csrc") do
         if name:match("^lk_.*%.c$") then
            local src = assert(h.read_file(h.ROOT .. "/csrc/" .. name))
            assert.is_nil(src:match('getenv%("LJLEAK_[%w_]+"%)'), name)
            assert.is_nil(src:match('"LJLEAK_[%w_]+=?"'), name)
         end
      end
      local function lua_dir(dir)
         for name in lfs.dir(dir) do
            local path = dir .. "/" .. name
            if name:match("%.lua$") and name ~= "const.lua" then
               -- (LJLEAK_SAVED_NAME: the launcher's copies of the user's LUA_* variables)
               local src = assert(h.read_file(path)):gsub('"LJLEAK_SAVED_"', "")
               assert.is_nil(src:match('"LJLEAK_[%w_]*"'), path)
            elseif not name:match("^%.") and lfs.attributes(path, "mode") == "directory" then
               lua_dir(path)
            end
         end
      end
      lua_dir(h.ROOT .. "/lua/ljleak")
   end)

   it("have every Lua name of an environment variable spelt as its key", function()
      for key, name in pairs(const.ENV) do assert.are.equal("LJLEAK_" .. key, name) end
   end)
end)
