-- Installed where users install it: `make install PREFIX=...` (and BINDIR elsewhere), the source
-- rock `make rock` packs built by luarocks into a fresh tree, `luajit -lljleak` from another
-- directory with either, `luarocks test` running `make test`, and `busted --helper=ljleak.busted`
-- saying when it has no leak checker. Builds with make and luarocks: not run under the tracker.
-- Run from the checkout: luajit /usr/bin/busted t/install_spec.lua
local h = require "t.helper"

local LEAK = 'local ffi = require "ffi" ffi.cdef "void *malloc(size_t);" ffi.C.malloc(%d)'
-- PATH without any ljleak, and the tools the specs run kept away from an enclosing ljleak run.
local ENV = {PATH = "/usr/bin:/bin", LD_PRELOAD = false, LJLEAK_DIR = false, LUA_PATH = false, LUA_CPATH = false,
             LUA_INIT = false}

local dir
before_each(function() dir = h.tmpdir() end)
after_each(function() h.rmtree(dir) end)

local function env(extra)
   local e = {}
   for k, v in pairs(ENV) do e[k] = v end
   for k, v in pairs(extra or {}) do e[k] = v end
   return e
end

-- Run ARGV in DIR (a directory that is not the checkout) with ENV; fail unless it exits with
-- CODE. Returns stdout and stderr.
local function expect(code, argv, extra_env, cwd)
   local c, out, err = h.run(argv, {cwd = cwd or dir, env = env(extra_env)})
   assert.are.equal(code, c, table.concat(argv, " ") .. "\n" .. out .. err)
   return out, err
end

-- That a run of LEAK (BYTES) was checked by the ljleak installed under ROOT: its leak found, by
-- ROOT's tracker (the allocation frame's object), not the checkout's.
local function checked_by(root, bytes, err)
   assert.matches(("\ndefinite: %d bytes in 1 block, pid %%d+ %%(loss record 1 of 1%%)\n"):format(bytes), err)
   assert.matches("\n    at malloc [" .. root .. "/lib/lua/5.1/ljleak/libljleak.so]\n", err, 1, true)
end

describe("make install", function()
   it("with PREFIX anywhere gives a launcher that finds its modules; `luajit -lljleak` finds it", function()
      local prefix = dir .. "/opt"
      expect(0, {"make", "-C", h.ROOT, "install", "PREFIX=" .. prefix})
      local _, err = expect(42, {prefix .. "/bin/ljleak", "run", "--", "luajit", "-e", LEAK:format(55)})
      checked_by(prefix, 55, err)
      -- the module re-runs the command under the launcher of its own tree
      local lua_path = ("%s/share/lua/5.1/?.lua;%s/share/lua/5.1/?/init.lua;;"):format(prefix, prefix)
      local _, err2 = expect(42, {"luajit", "-lljleak", "-e", LEAK:format(66)}, {LUA_PATH = lua_path})
      checked_by(prefix, 66, err2)
      -- the installed bytecode runs (the bootstrap the CLI found is there), the sources once one of
      -- them is newer
      local function boot()
         local out = expect(0, {prefix .. "/bin/ljleak", "run", "--", "luajit", "-e", "io.write(os.getenv'LUA_INIT')"})
         return out:match("loadfile%(\"(.-)\"%)")
      end
      assert.are.equal(prefix .. "/lib/lua/5.1/ljleak/lua/ljleak/engine/boot.lua", boot())
      assert(require("lfs").touch(prefix .. "/share/lua/5.1/ljleak/util.lua", os.time() + 10))
      assert.are.equal(prefix .. "/share/lua/5.1/ljleak/engine/boot.lua", boot())
   end)

   it("with BINDIR apart from the modules: `luajit -lljleak` finds the launcher where it was put", function()
      local prefix, bindir = dir .. "/opt", dir .. "/tools"
      expect(0, {"make", "-C", h.ROOT, "install", "PREFIX=" .. prefix, "BINDIR=" .. bindir})
      local lua_path = ("%s/share/lua/5.1/?.lua;%s/share/lua/5.1/?/init.lua;;"):format(prefix, prefix)
      local _, err = expect(42, {"luajit", "-lljleak", "-e", LEAK:format(77)}, {LUA_PATH = lua_path})
      checked_by(prefix, 77, err)
   end)
end)

describe("luarocks", function()
   it("builds the source rock `make rock` packs into a fresh tree, whose ljleak works from anywhere", function()
      expect(0, {"make", "-C", h.ROOT, "rock"}, nil, h.ROOT)
      local rock = h.ROOT .. "/build/ljleak-scm-1.src.rock"
      local tree = dir .. "/tree"
      expect(0, {"luarocks", "build", "--tree", tree, "--deps-mode=none", rock})
      local _, err = expect(42, {tree .. "/bin/ljleak", "run", "--", "luajit", "-e", LEAK:format(88)})
      checked_by(tree, 88, err)
      -- `luajit -lljleak` with the paths `luarocks path` gives, then the defaults (";;": the Lua
      -- dependencies are Debian's); not its PATH: the launcher is found beside the modules
      local lua_path = expect(0, {"luarocks", "path", "--tree", tree, "--lr-path"})
      local lua_cpath = expect(0, {"luarocks", "path", "--tree", tree, "--lr-cpath"})
      local _, err2 = expect(42, {"luajit", "-lljleak", "-e", LEAK:format(99)},
                             {LUA_PATH = lua_path:gsub("%s+$", ";;"), LUA_CPATH = lua_cpath:gsub("%s+$", ";;")})
      checked_by(tree, 99, err2)
   end)

   it("runs `make test` for `luarocks test`", function()
      local out = expect(0, {"luarocks", "test", "rockspec/ljleak-scm-1.rockspec", "--", "-n"}, nil, h.ROOT)
      assert.matches("\nsh t/run.sh\n", out, 1, true)   -- make -n: the commands make test runs
   end)
end)

describe("busted --helper=ljleak.busted", function()
   local lua_env = {LUA_PATH = h.ROOT .. "/lua/?.lua;" .. h.ROOT .. "/lua/?/init.lua;;",
                    LUA_CPATH = h.ROOT .. "/build/?.so;;"}

   it("says that it checks nothing when no leak checker is loaded", function()
      local out, err = expect(0, {"luajit", "/usr/bin/busted", "--helper=ljleak.busted",
                                  h.ROOT .. "/t/busted/clean_spec.lua"}, lua_env)
      assert.matches("2 successes / 0 failures", out, 1, true)
      assert.are.equal("ljleak.busted: no leak checker in this process (the tracker is not preloaded, and this is "
         .. "not Valgrind): no test is checked for leaks. Run the suite with `ljleak busted`, or "
         .. "`ljleak run -- busted ...`\n", err)
   end)

   it("says nothing under the tracker, and fails the leaky tests", function()
      local out, err = expect(42, {h.BIN, "run", "--", "luajit", "/usr/bin/busted", "--helper=ljleak.busted",
                                   h.ROOT .. "/t/busted/leaky_spec.lua"}, lua_env)
      assert.matches("3 failures", out, 1, true)   -- handles huge input, hits, leaks and fails
      assert.is_nil(err:find("ljleak.busted:", 1, true))
   end)
end)
