-- Suppressions (lua/ljleak/supp.lua): Valgrind's .supp format parsed by our own parser, matched by
-- Valgrind's rules against records of either engine, generated and merged; and the curated
-- default files. Pure Lua: this spec also runs under Valgrind in `make test`.
local h = require "t.helper"
local supp = require "ljleak.supp"

local function parse(text)
   return assert(supp.parse(text, "test.supp"))
end

local function entry(frames, extra)
   return parse(("{\n   e\n   Memcheck:Leak\n%s%s\n}\n"):format(extra or "", table.concat(frames, "\n")))[1]
end

-- A tracker record: the synthetic allocator frame, a named frame with its source line, a frame
-- in LuaJIT's VM with no symbol, and one in JIT code (an address only).
local TRACKER_REC = {kind = "definite", blocks = 1, bytes = 32, pid = 7, frames = {
   {["function"] = "malloc", object = "/build/ljleak/libljleak.so"},
   {["function"] = "leak_chain", file = "libleaky.c", dir = "/src/t/leak", line = 92,
    object = "/build/t/leak/libleaky.so", offset = "0x1167"},
   {object = "/usr/bin/luajit", offset = "0xdc66"},
   {address = "0x7f1c2e0010a0"},
}}

-- The same leak as Valgrind reports it.
local VALGRIND_REC = {kind = "definite", blocks = 1, bytes = 32, pid = 8, frames = {
   {["function"] = "malloc", object = "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so"},
   {["function"] = "leak_chain", file = "libleaky.c", dir = "/src/t/leak", line = 92,
    object = "/build/t/leak/libleaky.so"},
   {object = "/usr/bin/luajit", address = "0x115c65"},
   {["function"] = "lua_pcall", object = "/usr/bin/luajit"},
}}

local function matches(frames, rec, extra)
   return supp.matches(entry(frames, extra), rec)
end

describe("suppression parser", function()
   it("reads names, kinds, match-leak-kinds, every frame form and comments", function()
      local e = parse([[
# why: the cache lives as long as the process
  # indented comments count too
{
   my-cache
   Memcheck:Leak
   match-leak-kinds: definite,possible
   fun:mal*
   obj:/usr/lib/lib?.so
   src:libleaky.c:92
   src:other.c
   ...
}
]])
      assert.are.equal(1, #e)
      e = e[1]
      assert.are.equal("my-cache", e.name)
      assert.are.equal(4, e.line)
      assert.are.equal("test.supp", e.file)
      assert.are.equal("Memcheck", e.tool)
      assert.are.equal("Leak", e.kind)
      assert.are.same({definite = true, possible = true}, e.leak_kinds)
      assert.are.same({"# why: the cache lives as long as the process", "# indented comments count too"}, e.comments)
      assert.are.same({
         {type = "fun", text = "mal*"}, {type = "obj", text = "/usr/lib/lib?.so"},
         {type = "src", text = "libleaky.c:92", file = "libleaky.c", line = 92},
         {type = "src", text = "other.c", file = "other.c"}, {type = "..."},
      }, e.frames)
   end)

   it("reads the extra line of Param entries, error kinds, all/none and other tools' entries", function()
      local e = parse([[
{
   write-buffer
   Memcheck:Param
   write(buf)
   fun:write
}
{
   uaf
   Memcheck:Addr8
   fun:use_after_free
}
{
   every-kind
   Memcheck:Leak
   match-leak-kinds: all
   fun:malloc
}
{
   a-race
   Helgrind:Race
   fun:whatever
   anything Helgrind has
}
{
   fd
   CoreError:FdNotClosed
   fun:open
}
]])
      assert.are.equal(5, #e)
      assert.are.equal("write(buf)", e[1].extra)
      assert.are.equal("Addr8", e[2].kind)
      assert.are.same({definite = true, indirect = true, possible = true, reachable = true}, e[3].leak_kinds)
      assert.is_nil(e[4].tool)   -- kept for merging, never matched
      assert.are.equal("CoreError", e[5].tool)
   end)

   -- Each: text, line of the message, part of the message. Valgrind rejects each of these too.
   local bad = {
      {"no brace", "hello\n", 1, "expected '{'"},
      {"no name", "{\n}\n", 2, "no name"},
      {"no kind line", "{\n   n\n   malloc\n}\n", 3, "TOOL:KIND"},
      {"unknown kind", "{\n   n\n   Memcheck:Leek\n   fun:f\n}\n", 3, "unknown Memcheck suppression kind 'Leek'"},
      {"bad leak kinds", "{\n   n\n   Memcheck:Leak\n   match-leak-kinds: definite, possible\n   fun:f\n}\n", 4,
       "bad match%-leak%-kinds"},
      {"src: first in a Leak entry", "{\n   n\n   Memcheck:Leak\n   src:a.c:3\n}\n", 4, "does not take src:"},
      {"Param without its line", "{\n   n\n   Memcheck:Param\n   fun:write\n}\n", 4, "extra line"},
      {"bad frame", "{\n   n\n   Memcheck:Leak\n   fun:f\n   func:g\n}\n", 5, "bad location 'func:g'"},
      {"bad src line", "{\n   n\n   Memcheck:Leak\n   fun:f\n   src:a.c:x\n}\n", 5, "bad line number"},
      {"no frames", "{\n   n\n   Memcheck:Leak\n}\n", 4, "missing stack trace"},
      {"only ...", "{\n   n\n   Memcheck:Leak\n   ...\n}\n", 5, "not '...'"},
      {"no closing brace", "{\n   n\n   Memcheck:Leak\n   fun:f\n", 4, "missing '}'"},
      -- Lua frame lines are ljleak's own; these are the ways to get them wrong
      {"Lua line without source", "{\n   n\n   Memcheck:Leak\n   fun:f\n   lua::12\n}\n", 5, "no source in 'lua::12'"},
      {"Lua line ending in ':'", "{\n   n\n   Memcheck:Leak\n   fun:f\n   #lua:a.lua:\n}\n", 5,
       "nothing after the last ':' in '#lua:a%.lua:'"},
      {"Lua line as the name", "{\n   #lua:a.lua:3\n   Memcheck:Leak\n   fun:f\n}\n", 2,
       "Lua frame line '#lua:a%.lua:3' where the entry's name belongs"},
      {"Lua line as the kind", "{\n   n\n   lua:a.lua:3\n   fun:f\n}\n", 3, "where TOOL:KIND belongs"},
      {"only Lua lines", "{\n   n\n   Memcheck:Leak\n   lua:a.lua:3\n}\n", 5,
       "at least one frame that is not a Lua line %(fun:%* will do%)"},
   }
   for _, case in ipairs(bad) do
      it("rejects a malformed file with FILE:LINE: " .. case[1], function()
         local entries, err = supp.parse(case[2], "x.supp")
         assert.is_nil(entries)
         assert.matches("^x%.supp:" .. case[3] .. ": ", err)
         assert.matches(case[4], err)
      end)
   end
end)

describe("Lua frame lines", function()
   it("are read in both forms, #lua: only inside an entry, with their source, line or function", function()
      local e = parse([[
#lua:not-a-frame.lua:1 (a comment: outside an entry)
{
   e
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   ...
   #lua:app.lua:12
   # lua:also-a-comment.lua:2
   ...
   lua:t/*/util.lua:helper
   lua:[string "x = 1"]:*
   lua:main.lua
   lua:...
   fun:main
}
]])[1]
      assert.are.same({{type = "fun", text = "malloc"}, {type = "..."}, {type = "fun", text = "main"}}, e.frames)
      assert.are.same({
         {type = "lua", text = "app.lua:12", source = "app.lua", path = false, line = 12, hash = true},
         {type = "...", bare = true},   -- a bare "..." after a Lua line is one of the Lua lines
         {type = "lua", text = "t/*/util.lua:helper", source = "t/*/util.lua", path = true, func = "helper"},
         {type = "lua", text = '[string "x = 1"]:*', source = '[string "x = 1"]', path = false, func = "*"},
         {type = "lua", text = "main.lua", source = "main.lua", path = false},
         {type = "..."},
      }, e.lua)
      assert.are.same({"#lua:not-a-frame.lua:1 (a comment: outside an entry)", "# lua:also-a-comment.lua:2"},
                      e.comments)
   end)

   it("are written back as they were read, after the C frames", function()
      local text = "{\n   e\n   Memcheck:Leak\n   fun:malloc\n   ...\n   #lua:app.lua:12\n   ...\n"
         .. "   lua:main.lua:main chunk\n   lua:...\n   fun:main\n}\n"
      assert.are.equal("{\n   e\n   Memcheck:Leak\n   fun:malloc\n   ...\n   fun:main\n   #lua:app.lua:12\n   ...\n"
         .. "   lua:main.lua:main chunk\n   lua:...\n}\n", supp.format_entry(parse(text)[1]))
   end)

   -- A block ffi.C.malloc gave to Lua code: LuaJIT's VM frames in C, the Lua frames innermost first.
   local function lua_rec(lua)
      return {kind = "definite", frames = {{["function"] = "malloc"}, {object = "/usr/bin/luajit"},
                                           {["function"] = "main", object = "/usr/bin/luajit"}}, lua = lua}
   end
   local REC = lua_rec({
      {source = "t/leak/util.lua", line = 7, ["function"] = "helper"},
      {source = "[C]", ["function"] = "pcall"},
      {source = "app.lua", line = 12, ["function"] = "main chunk"},
   })
   local function lua_matches(lines, rec)
      local t = {"fun:malloc"}
      for _, l in ipairs(lines) do t[#t + 1] = l end
      return supp.matches(entry(t), rec or REC)
   end

   it("match a record's Lua frames from the innermost, by file name or whole source", function()
      assert.is_true(lua_matches({"lua:util.lua:7"}))
      assert.is_true(lua_matches({"#lua:util.lua:7", "#lua:[C]:pcall", "#lua:app.lua:12"}))
      assert.is_true(lua_matches({"lua:t/leak/util.lua:7"}))
      assert.is_true(lua_matches({"lua:t/*/util.lua"}))
      assert.is_true(lua_matches({"lua:util.lua:help*"}))
      assert.is_true(lua_matches({"lua:u?il.lua:helper", "lua:*:pcall", "lua:app.lua:main chunk"}))
      assert.is_false(lua_matches({"lua:util.lua:8"}))
      assert.is_false(lua_matches({"lua:leak/util.lua:7"}))   -- with a "/": the whole source
      assert.is_false(lua_matches({"lua:util.lua:other"}))
      assert.is_false(lua_matches({"lua:app.lua:12"}))        -- not the innermost frame
      assert.is_false(lua_matches({"lua:[C]:7"}))             -- a frame without a line matches no line
   end)

   it("take ... as zero or more Lua frames, and never match past the last frame", function()
      assert.is_true(lua_matches({"lua:...", "lua:app.lua:12"}))
      assert.is_true(lua_matches({"#lua:util.lua:7", "...", "#lua:[C]:pcall"}))   -- zero frames
      assert.is_true(lua_matches({"lua:util.lua", "...", "lua:app.lua"}))
      assert.is_false(lua_matches({"lua:...", "lua:other.lua"}))
      assert.is_false(lua_matches({"lua:util.lua", "lua:[C]", "lua:app.lua", "lua:*"}))
   end)

   it("tell apart leaks whose C stacks are the same, by their Lua lines", function()
      local e = entry({"fun:malloc", "obj:/usr/bin/luajit", "fun:main", "#lua:app.lua:12"})
      assert.is_true(supp.matches(e, lua_rec({{source = "app.lua", line = 12}})))
      assert.is_false(supp.matches(e, lua_rec({{source = "app.lua", line = 13}})))
      assert.is_false(supp.matches(e, lua_rec({{source = "other/app2.lua", line = 12}})))
      -- C frame lines still have to match
      assert.is_false(supp.matches(entry({"fun:calloc", "#lua:app.lua:12"}),
                                   lua_rec({{source = "app.lua", line = 12}})))
   end)

   it("never match a record whose Lua location is unknown; an entry without them matches as before", function()
      local e = entry({"fun:malloc", "obj:/usr/bin/luajit", "#lua:app.lua:12"})
      assert.is_false(supp.matches(e, lua_rec({})))   -- JIT code, or C code that ran no Lua: not hidden
      assert.is_false(supp.matches(e, lua_rec(nil)))
      assert.is_true(supp.matches(entry({"fun:malloc", "obj:/usr/bin/luajit"}), REC))
      assert.is_true(supp.matches(entry({"fun:malloc", "obj:/usr/bin/luajit"}), lua_rec({})))
   end)
end)

describe("matching cost", function()
   it("is linear in a glob's length, for globs that backtracking would take ages on", function()
      local long = ("a"):rep(300)
      local glob = "*a*a*a*a*a*a*a*a*a*a*a*b"
      assert.is_false(supp.glob_match(glob, long))
      assert.is_true(supp.glob_match(glob, long .. "b"))
      local rec = {kind = "definite", frames = {{["function"] = long}}}
      assert.is_false(matches({"fun:" .. glob}, rec))
      assert.is_true(matches({"fun:*a*a*a*a*a*a*a*a*a*a*a*"}, rec))
   end)

   -- FIRST, then 30 times DOTS and ANY, then LAST: plain recursion tries every way to place 30
   -- items among 200 before it gives up when LAST matches nothing.
   local function crafted(first, dots, any, last)
      local lines = {first}
      for _ = 1, 30 do
         lines[#lines + 1] = dots
         lines[#lines + 1] = any
      end
      lines[#lines + 1] = last
      return lines
   end

   it("is O(frames x lines) for entries full of '...', C and Lua lines alike", function()
      local frames, lua = {}, {}
      for i = 1, 200 do
         frames[i] = {["function"] = "f" .. i}
         lua[i] = {source = "a.lua", line = i}
      end
      local rec = {kind = "definite", frames = frames, lua = lua}
      assert.is_false(matches(crafted("...", "...", "fun:f*", "fun:nowhere"), rec))
      assert.is_true(matches(crafted("...", "...", "fun:f*", "fun:f200"), rec))
      assert.is_false(matches(crafted("fun:f1", "lua:...", "lua:a.lua", "lua:b.lua"), rec))
      assert.is_true(matches(crafted("fun:f1", "lua:...", "lua:a.lua", "lua:a.lua:200"), rec))
   end)
end)

-- (Demangling itself is in t/supp_run_spec.lua: it loads libstdc++, whose emergency pool Valgrind
-- calls reachable, and this spec also runs under Valgrind.)
describe("C++ names", function()
   local rec = {kind = "definite", frames = {{["function"] = "malloc"},
      {["function"] = "thing::make(unsigned long)", mangled = "_ZN5thing4makeEm", object = "/b/libmangled.so"}}}

   it("match fun: lines by the linkage name and by the demangled name", function()
      assert.is_true(matches({"fun:malloc", "fun:_ZN5thing4makeEm"}, rec))
      assert.is_true(matches({"fun:malloc", "fun:thing::make(unsigned long)"}, rec))
      assert.is_true(matches({"fun:malloc", "fun:thing::make*"}, rec))
      assert.is_true(matches({"fun:malloc", "fun:_ZN5thing*"}, rec))
      assert.is_false(matches({"fun:malloc", "fun:thing::take*"}, rec))
   end)

   it("are written as linkage names in generated entries, as Valgrind writes them", function()
      local e = supp.generate({leaks = {rec}})[1]
      assert.are.same({{type = "fun", text = "malloc"}, {type = "fun", text = "_ZN5thing4makeEm"}}, e.frames)
      assert.are.equal("definite-leak-in-thing::make(unsigned long)", e.name)
   end)
end)

describe("stacks", function()
   local symbolize = require "ljleak.symbolize"
   local function names(frames)
      local t = {}
      for i, f in ipairs(frames) do t[i] = f["function"] or f.object end
      return t
   end

   it("end at main, as Valgrind's do: the C runtime's frames below it are dropped", function()
      local frames = {{["function"] = "malloc"}, {object = "/usr/bin/luajit"}, {["function"] = "main"},
                      {["function"] = "__libc_start_call_main"}, {["function"] = "__libc_start_main"},
                      {["function"] = "_start"}}
      assert.are.same({"malloc", "/usr/bin/luajit", "main"}, names(symbolize.end_at_main(frames)))
      -- without main, at the innermost function below it, named as Valgrind names it
      frames = {{["function"] = "malloc"}, {object = "/x/prog"}, {["function"] = "__libc_start_call_main"},
                {["function"] = "__libc_start_main"}, {["function"] = "_start"}}
      assert.are.same({"malloc", "/x/prog", "(below main)"}, names(symbolize.end_at_main(frames)))
      -- a thread's stack has neither: kept whole
      frames = {{["function"] = "malloc"}, {["function"] = "start_thread"}, {["function"] = "clone3"}}
      assert.are.same({"malloc", "start_thread", "clone3"}, names(symbolize.end_at_main(frames)))
   end)
end)

describe("suppression matching", function()
   it("matches fun: against the function, the allocator frame of both engines alike", function()
      assert.is_true(matches({"fun:malloc", "fun:leak_chain"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc", "fun:leak_chain"}, VALGRIND_REC))
      assert.is_false(matches({"fun:calloc", "fun:leak_chain"}, TRACKER_REC))
   end)

   it("matches obj: against the object, and an unknown function or object as ???", function()
      assert.is_true(matches({"fun:malloc", "obj:/build/t/leak/libleaky.so"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc", "fun:leak_chain", "fun:???", "obj:???"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc", "fun:leak_chain", "obj:/usr/bin/luajit"}, VALGRIND_REC))
      assert.is_false(matches({"fun:malloc", "fun:leak_chain", "obj:???"}, TRACKER_REC))
   end)

   it("matches src: against the file name, and its line when given", function()
      assert.is_true(matches({"fun:malloc", "src:libleaky.c"}, TRACKER_REC, "   match-leak-kinds: all\n"))
      assert.is_true(matches({"fun:malloc", "src:libleaky.c:92"}, VALGRIND_REC, "   match-leak-kinds: all\n"))
      assert.is_false(matches({"fun:malloc", "src:libleaky.c:93"}, TRACKER_REC, "   match-leak-kinds: all\n"))
      assert.is_false(matches({"fun:malloc", "src:t/leak/libleaky.c"}, TRACKER_REC, "   match-leak-kinds: all\n"))
      assert.is_true(matches({"fun:malloc", "src:*.c:92"}, TRACKER_REC, "   match-leak-kinds: all\n"))
      -- a frame without a source file never matches src:, not even src:*
      assert.is_false(matches({"fun:malloc", "fun:leak_chain", "src:*"}, TRACKER_REC, "   match-leak-kinds: all\n"))
   end)

   it("takes * as any run of characters (none too) and ? as exactly one", function()
      assert.is_true(matches({"fun:*"}, TRACKER_REC))
      assert.is_true(matches({"fun:m*c"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc*"}, TRACKER_REC))
      assert.is_true(matches({"fun:ma?loc"}, TRACKER_REC))
      assert.is_false(matches({"fun:ma?lloc"}, TRACKER_REC))
      assert.is_false(matches({"fun:?malloc"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc", "obj:*/libleaky.so"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc", "fun:leak_chain", "obj:*", "obj:*"}, TRACKER_REC))  -- JIT frame: ???
      -- Lua pattern characters are plain characters in a glob
      assert.is_false(matches({"fun:mal.oc"}, TRACKER_REC))
      assert.is_true(supp.glob_match("a%b(c)[d].+-", "a%b(c)[d].+-"))
   end)

   it("takes ... as zero or more frames, anywhere", function()
      assert.is_true(matches({"...", "fun:leak_chain"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc", "...", "fun:leak_chain"}, TRACKER_REC))   -- zero frames
      assert.is_true(matches({"...", "obj:/usr/bin/luajit"}, TRACKER_REC))
      assert.is_true(matches({"fun:malloc", "...", "...", "obj:/usr/bin/luajit", "..."}, TRACKER_REC))
      assert.is_false(matches({"...", "fun:lua_pcall"}, TRACKER_REC))
      assert.is_true(matches({"...", "fun:lua_pcall"}, VALGRIND_REC))
   end)

   it("matches a prefix of the stack, and never past its end", function()
      assert.is_true(matches({"fun:malloc"}, TRACKER_REC))
      assert.is_false(matches({"fun:leak_chain"}, TRACKER_REC))   -- not the top frame
      assert.is_false(matches({"fun:malloc", "fun:leak_chain", "obj:*", "obj:*", "obj:*"}, TRACKER_REC))
   end)

   it("counts only as many frame lines as the engine keeps frames (--num-callers)", function()
      local e = entry({"fun:malloc", "fun:leak_chain", "obj:*", "obj:*", "fun:not_there"})
      assert.is_false(supp.matches(e, TRACKER_REC))
      assert.is_true(supp.matches(e, TRACKER_REC, 4))
   end)

   it("matches leak kinds: all without match-leak-kinds, else only those listed", function()
      local rec = {kind = "reachable", frames = TRACKER_REC.frames}
      assert.is_true(matches({"fun:malloc"}, rec))
      assert.is_true(matches({"fun:malloc"}, rec, "   match-leak-kinds: possible,reachable\n"))
      assert.is_false(matches({"fun:malloc"}, rec, "   match-leak-kinds: definite\n"))
      assert.is_false(matches({"fun:malloc"}, rec, "   match-leak-kinds: none\n"))
   end)

   it("matches an error record by its memcheck kind, size and Param name", function()
      local e = parse([[
{
   read8
   Memcheck:Addr8
   fun:leak_chain
}
{
   write-param
   Memcheck:Param
   write(buf)
   fun:write
}
{
   leak
   Memcheck:Leak
   fun:leak_chain
}
]])
      local read8 = {kind = "InvalidRead", supp_tool = "Memcheck", supp_kind = "Addr8",
                     frames = {{["function"] = "leak_chain"}}}
      assert.are.equal("read8", supp.find(e, read8).name)
      read8.supp_kind = "Addr4"
      assert.is_nil(supp.find(e, read8))
      local param = {kind = "SyscallParam", supp_tool = "Memcheck", supp_kind = "Param", supp_extra = "write(buf)",
                     frames = {{["function"] = "write"}}}
      assert.are.equal("write-param", supp.find(e, param).name)
      param.supp_extra = "read(buf)"
      assert.is_nil(supp.find(e, param))
   end)

   it("marks what it suppresses, first entry wins, and counts use per entry", function()
      local e = parse([[
{
   first
   Memcheck:Leak
   fun:malloc
   fun:leak_chain
}
{
   second
   Memcheck:Leak
   fun:malloc
}
{
   unused
   Memcheck:Leak
   fun:calloc
}
]])
      local rep = {leaks = {
         {kind = "definite", blocks = 1, bytes = 32, frames = TRACKER_REC.frames},
         {kind = "indirect", blocks = 2, bytes = 96, frames = TRACKER_REC.frames},
         {kind = "reachable", blocks = 1, bytes = 5, frames = {{["function"] = "malloc"}, {["function"] = "other"}}},
         {kind = "definite", blocks = 1, bytes = 7, frames = {{["function"] = "free"}}},
      }, errors = {}}
      local used = supp.apply(rep, e)
      assert.are.equal("first", rep.leaks[1].suppressed_by)
      assert.are.equal("first", rep.leaks[2].suppressed_by)
      assert.are.equal("second", rep.leaks[3].suppressed_by)
      assert.is_nil(rep.leaks[4].suppressed_by)
      assert.are.same({
         {name = "first", file = "test.supp", line = 2, records = 2, blocks = 3, bytes = 128, count = 0},
         {name = "second", file = "test.supp", line = 8, records = 1, blocks = 1, bytes = 5, count = 0},
      }, used)
   end)
end)

describe("suppression generation", function()
   local report = {engine = "tracker", command = {"luajit", "app.lua"}, leaks = {
      TRACKER_REC,
      {kind = "indirect", blocks = 1, bytes = 48, pid = 7, frames = TRACKER_REC.frames},
      {kind = "definite", blocks = 1, bytes = 100, pid = 7, frames = {
         {["function"] = "malloc", object = "/build/ljleak/libljleak.so"}, {address = "0x7f00"}}},
      {kind = "reachable", blocks = 3, bytes = 30, pid = 7, suppressed_by = "known", frames = TRACKER_REC.frames},
   }, errors = {
      {kind = "InvalidRead", message = "Invalid read of size 4", count = 3, pid = 7, supp_tool = "Memcheck",
       supp_kind = "Addr4", frames = {{["function"] = "use_after_free", object = "/b/lib.so"}}},
   }}

   it("writes one named entry per leak site and error, never Valgrind's placeholder", function()
      local entries = supp.generate(report)
      assert.are.equal(3, #entries)
      local names = {}
      for i, e in ipairs(entries) do
         names[i] = e.name
         assert.are_not.equal(supp.PLACEHOLDER_NAME, e.name)
         assert.matches("^# Generated by ljleak", e.comments[1])
      end
      assert.are.same({"leak-in-leak_chain", "definite-leak-in-jit-code", "InvalidRead-in-use_after_free"}, names)
      -- the definite and indirect records of one stack make one entry for both kinds
      assert.are.equal("definite,indirect", entries[1].leak_kinds_text)
      assert.are.same({{type = "fun", text = "malloc"}, {type = "fun", text = "leak_chain"},
                       {type = "obj", text = "/usr/bin/luajit"}, {type = "obj", text = "???"}}, entries[1].frames)
      -- a frame in JIT code matches only such frames, and ends the entry (what follows is not reliable)
      assert.are.same({{type = "fun", text = "malloc"}, {type = "obj", text = "???"}}, entries[2].frames)
      assert.are.equal("Addr4", entries[3].kind)
   end)

   it("writes text that parses back, and that suppresses exactly what it was made from", function()
      local text = supp.format(supp.generate(report), supp.generated_header(report))
      local entries = parse(text)
      assert.are.equal(3, #entries)
      local copy = {leaks = {}, errors = {}}
      for i, rec in ipairs(report.leaks) do
         local c = {}
         for k, v in pairs(rec) do c[k] = v end
         copy.leaks[i] = c
      end
      copy.errors[1] = setmetatable({}, {__index = report.errors[1]})
      supp.apply(copy, entries)
      for i = 1, 3 do assert.is_truthy(copy.leaks[i].suppressed_by, i) end
      assert.are.equal("known", copy.leaks[4].suppressed_by)
      assert.is_truthy(copy.errors[1].suppressed_by)
      -- and nothing else
      local other = {kind = "definite", frames = {{["function"] = "malloc"},
                                                  {["function"] = "leak_cycle", object = "/b/libleaky.so"}}}
      assert.is_nil(supp.find(entries, other))
   end)

   it("adds a record's Lua frames as #lua: lines, and names a Lua-side leak after its Lua line", function()
      local vm = {{["function"] = "malloc"}, {object = "/usr/bin/luajit"}, {["function"] = "main"}}
      local rep = {leaks = {
         {kind = "definite", blocks = 1, bytes = 111, frames = vm, lua = {
            {source = "t/leak/lua_lines.lua", line = 9, ["function"] = "main chunk"}}},
         {kind = "definite", blocks = 1, bytes = 222, frames = vm, lua = {
            {source = "t/leak/lua_lines.lua", line = 10, ["function"] = "main chunk"}}},
         {kind = "definite", blocks = 1, bytes = 5, frames = vm, lua = {
            {source = "[C]", ["function"] = "pcall"}, {source = "=stdin"}}},
      }}
      local text = supp.format(supp.generate(rep))
      assert.are.equal([[
{
   definite-leak-in-lua_lines.lua:9
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   obj:/usr/bin/luajit
   fun:main
   #lua:lua_lines.lua:9
}
]], text:match("^[^{]*({.-}\n)"))
      local entries = parse(text)
      assert.are.same({"definite-leak-in-lua_lines.lua:9", "definite-leak-in-lua_lines.lua:10",
                       "definite-leak-in-[C]:pcall"}, {entries[1].name, entries[2].name, entries[3].name})
      assert.are.same({"#lua:[C]:pcall", "#lua:=stdin:*"}, {text:match("(#lua:%[C%]:pcall)\n   (#lua:=stdin:%*)")})
      -- each entry suppresses its own record and not the other's
      for i, rec in ipairs(rep.leaks) do
         assert.are.equal(entries[i].name, supp.find(entries, rec).name)
      end
   end)

   it("generates the same names for the same stacks (a second run gives the same file)", function()
      assert.are.equal(supp.format(supp.generate(report)), supp.format(supp.generate(report)))
   end)
end)

describe("merging suppression files", function()
   it("drops duplicates, joins leak kinds, keeps comments, and makes names unique", function()
      local a = parse([[
# cache of libfoo
{
   foo-cache
   Memcheck:Leak
   match-leak-kinds: reachable
   fun:malloc
   fun:foo_init
}
{
   bar
   Memcheck:Leak
   fun:malloc
   fun:bar
}
]])
      local b = parse([[
# also seen as possible
{
   foo-cache-again
   Memcheck:Leak
   match-leak-kinds: possible
   fun:malloc
   fun:foo_init
}
{
   bar
   Memcheck:Leak
   fun:malloc
   fun:baz
}
]])
      local all = {}
      for _, e in ipairs(a) do all[#all + 1] = e end
      for _, e in ipairs(b) do all[#all + 1] = e end
      local merged = supp.merge(all)
      assert.are.equal(3, #merged)
      assert.are.equal("foo-cache", merged[1].name)
      assert.are.equal("possible,reachable", merged[1].leak_kinds_text)
      assert.are.same({"# cache of libfoo", "# also seen as possible"}, merged[1].comments)
      assert.are.same({"bar", "bar-2"}, {merged[2].name, merged[3].name})
      -- the merged text is a valid file with the same entries
      assert.are.equal(3, #parse(supp.format(merged)))
   end)

   it("merges files from the command line, and fails with FILE:LINE on a bad one", function()
      local dir = h.tmpdir()
      h.write_file(dir .. "/a.supp", "{\n   x\n   Memcheck:Leak\n   fun:malloc\n}\n")
      h.write_file(dir .. "/b.supp",
                   "{\n   y\n   Memcheck:Leak\n   fun:malloc\n}\n{\n   z\n   Memcheck:Leak\n   fun:f\n}\n")
      h.write_file(dir .. "/bad.supp", "{\n   y\n   Memcheck:Lost\n   fun:malloc\n}\n")
      local code, out = h.run({h.BIN, "suppressions", "merge", dir .. "/a.supp", dir .. "/b.supp"})
      assert.are.equal(0, code)
      local merged = parse(out)
      assert.are.same({"x", "z"}, {merged[1].name, merged[2].name})
      local err
      code, out, err = h.run({h.BIN, "suppressions", "merge", dir .. "/a.supp", dir .. "/bad.supp"})
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.are.equal(("ljleak: %s/bad.supp:3: unknown Memcheck suppression kind 'Lost'\n"):format(dir), err)
      h.rmtree(dir)
   end)
end)

describe("the default suppression files", function()
   local files = assert(supp.default_files())

   it("are one file per origin", function()
      local names = {}
      for i, f in ipairs(files) do names[i] = f:match("[^/]*$") end
      assert.are.same({"busted.supp", "glibc.supp", "libgcc.supp", "luajit.supp", "nginx.supp"}, names)
   end)

   it("parse, and every entry has its own name and a comment with the reason and versions seen", function()
      local seen = {}
      for _, f in ipairs(files) do
         for _, e in ipairs(assert(supp.read(f))) do
            assert.is_nil(seen[e.name], "name used twice: " .. e.name)
            assert.are_not.equal(supp.PLACEHOLDER_NAME, e.name)
            seen[e.name] = true
            assert.is_true(#e.comments > 0 or e.name == "nginx-event-process-init-epoll-list", e.name)
            local text = table.concat(e.comments, "\n")
            if e.name ~= "nginx-event-process-init-epoll-list" then   -- shares the comment above it
               assert.matches("Seen: Debian 12", text, 1, true)
            end
            assert.are.equal("Memcheck", e.tool, e.name)
         end
      end
   end)
end)
