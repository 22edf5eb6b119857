-- Suppressions end to end with real runs: C++ names shown demangled and matched in both forms
-- under both engines. Runs Valgrind itself, so t/run.sh runs it outside the tracker.
local h = require "t.helper"
local valgrind = require "ljleak.valgrind"

local one, only_definite = h.one, h.only_definite

local have_valgrind = valgrind.find() ~= nil

describe("a C++ function", function()
  local dir = h.tmpdir()
  local by_mangled, by_demangled = dir .. "/mangled.supp", dir .. "/demangled.supp"
  h.write_file(by_demangled, "{\n   by-demangled-name\n   Memcheck:Leak\n   fun:malloc\n"
    .. "   fun:thing::make(unsigned long)\n}\n")
  teardown(function() h.rmtree(dir) end)

  it("is demangled by ljleak.core through libstdc++, and a C name is left alone", function()
    local core = require "ljleak.core"
    local symbolize = require "ljleak.symbolize"
    assert.are.equal("thing::make(unsigned long)", core.demangle("_ZN5thing4makeEm"))
    assert.are.equal("std::vector<int, std::allocator<int> >::push_back(int const&)",
                     core.demangle("_ZNSt6vectorIiSaIiEE9push_backERKi"))
    local none, err = core.demangle("malloc")
    assert.is_nil(none)
    assert.are.equal("not a mangled C++ name", err)
    assert.is_nil((core.demangle("_Zjunk")))
    assert.are.same({["function"] = "thing::make(unsigned long)", mangled = "_ZN5thing4makeEm"},
                    symbolize.name_frame({}, "_ZN5thing4makeEm"))
    assert.are.same({["function"] = "malloc"}, symbolize.name_frame({}, "malloc"))
  end)

  local function check_record(r)
    only_definite(r, 1, 77)
    local f = one(r, "definite").frames[2]
    assert.are.same({"thing::make(unsigned long)", "_ZN5thing4makeEm", "libmangled.c", 11},
                    {f["function"], f.mangled, f.file, f.line})
  end

  for _, engine in ipairs({"tracker", "valgrind"}) do
    it("is shown demangled, matched by either name, under the " .. engine, function()
      if engine == "valgrind" and not have_valgrind then return pending("needs valgrind") end
      local engine_opt = "--engine=" .. engine
      local gen = dir .. "/" .. engine .. ".supp"
      local r, code, err = h.fixture("mangled", {engine_opt, "--gen-suppressions=" .. gen})
      assert.are.equal(42, code, err)
      check_record(r)
      assert.matches("\n    by thing::make(unsigned long) (libmangled.c:11) [", err, 1, true)
      -- generated entries hold the linkage name, as Valgrind's own --gen-suppressions writes it
      assert.matches("\n   fun:malloc\n   fun:_ZN5thing4makeEm\n", h.read_file(gen), 1, true)
      if engine == "tracker" then h.write_file(by_mangled, h.read_file(gen)) end
      -- the tracker's file (mangled name) and a hand-written one (demangled name) both match
      for _, file in ipairs({by_mangled, by_demangled}) do
        r, code, err = h.fixture("mangled", {engine_opt, "--suppressions=" .. file})
        assert.are.equal(0, code, err)
        only_definite(r, 0, 0)
        local rec = h.record_of_size(r, "definite", 77)
        assert.are.equal(file == by_mangled and "definite-leak-in-thing::make(unsigned long)" or "by-demangled-name",
                         rec.suppressed_by)
      end
    end)
  end
end)
