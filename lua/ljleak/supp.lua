-- Suppressions in Valgrind's .supp format, one format for both engines: the parser, the matcher
-- (Valgrind's rules, applied to the tracker's records and to Valgrind's alike), the generator and
-- the merger. Valgrind's own parser and matcher (coregrind/m_errormgr.c) are the reference.
-- ljleak adds Lua frame lines (`lua:SOURCE:LINE`, or `#lua:...`, which raw Valgrind skips as a
-- comment), matched against a record's Lua frames.
--
-- entry = {
--   name = "libgcc-register-frame", file = "suppressions/libgcc.supp", line = 12 (of the name),
--   tools = "Memcheck", tool = "Memcheck"|"CoreError"|nil (nil: an entry for another Valgrind tool,
--   kept when merging, never matched), kind = "Leak", extra = "write(buf)" (Param, FishyValue),
--   leak_kinds = {definite = true, ...} or nil (all), leak_kinds_text = "definite,possible",
--   frames = { {type = "fun"|"obj"|"src"|"...", text = "malloc", file = "x.c", line = 12} },
--   lua = { {type = "lua", text = "app.lua:12", source = "app.lua", path = false, line = 12,
--            func = nil, hash = true} or {type = "...", hash = true|nil, bare = true|nil} },
--   comments = {"# why this is not a bug"},
-- }
-- In `lua`, `path` says that SOURCE has a "/" (matched against the whole source, else against its
-- file name), `hash` that the line was written `#lua:`, `bare` that a "..." was written without
-- `lua:` (after a Lua line).
-- A record (ljleak.model's) has `kind` (a leak kind) or, for an error, `supp_tool`, `supp_kind` and
-- maybe `supp_extra`; `frames` ({function, mangled, object, file, line} or {address}); and `lua`
-- ({source, line, function}, innermost first).
local lfs = require "lfs"
local stdlib = require "posix.stdlib"

local const = require "ljleak.const"
local util = require "ljleak.util"

local M = {}

M.LEAK_KINDS = const.KINDS
local is_leak_kind = {}
for _, k in ipairs(M.LEAK_KINDS) do is_leak_kind[k] = true end

-- Memcheck's suppression kinds; "extra": a mandatory line after the kind line.
local MEMCHECK_KINDS = {
   Param = "extra", FishyValue = "extra", Leak = "leak",
   Cond = true, Value0 = true, Jump = true, User = true, Free = true, Mempool = true, Overlap = true,
   ReallocZero = true,
}
for _, n in ipairs({1, 2, 4, 8, 16, 32}) do
   MEMCHECK_KINDS["Value" .. n], MEMCHECK_KINDS["Addr" .. n] = true, true
end
local CORE_KINDS = {FdBadClose = true, FdNotClosed = true, FdBadUse = true}

-- The name Valgrind's --gen-suppressions gives every entry; ljleak's never do.
M.PLACEHOLDER_NAME = "<insert_a_suppression_name_here>"

-- -- Parsing ---------------------------------------------------------------------------------

-- "tool1,tool2" contains TOOL as a whole item.
local function has_tool(tools, tool)
   for t in (tools .. ","):gmatch("([^,]*),") do
      if t == tool then return true end
   end
   return false
end

-- A `match-leak-kinds:` set: a comma-separated list of leak kinds, or `all`, or `none`.
-- Returns the set, or nil when a word is not a kind (Valgrind takes no spaces after commas).
local function parse_leak_kinds(text)
   if text == "all" then
      local set = {}
      for _, k in ipairs(M.LEAK_KINDS) do set[k] = true end
      return set
   elseif text == "none" then
      return {}
   end
   local set = {}
   for word in (text .. ","):gmatch("([^,]*),") do
      if not is_leak_kind[word] then return nil end
      set[word] = true
   end
   return set
end

-- Is L a Lua frame line (`lua:...`, or `#lua:...` inside an entry)?
local function is_lua_line(l)
   return l:sub(1, 4) == "lua:" or l:sub(1, 5) == "#lua:"
end

-- The text after `lua:` as a Lua frame pattern, or nil, message. LINE: the whole line.
local function parse_lua(rest, line, hash)
   if rest == "..." then return {type = "...", hash = hash} end
   local source, last = rest:match("^(.*):([^:]*)$")
   source = source or rest
   if source == "" then
      return nil, ("no source in '%s' (want lua:SOURCE, lua:SOURCE:LINE or lua:SOURCE:FUNCTION)"):format(line)
   end
   if last == "" then
      return nil, ("nothing after the last ':' in '%s' (want a line number or a function name)"):format(line)
   end
   local pat = {type = "lua", text = rest, source = source, path = source:find("/", 1, true) ~= nil, hash = hash}
   if last and last:match("^%d+$") then
      pat.line = tonumber(last)
   else
      pat.func = last
   end
   return pat
end

-- One location line as a frame pattern, or nil, message. AFTER_LUA: the previous frame line was a
-- Lua line (a bare "..." then belongs to the Lua lines).
local function parse_location(line, after_lua)
   if line == "..." then return {type = "...", bare = after_lua or nil}, after_lua end
   if is_lua_line(line) then
      local hash = line:sub(1, 1) == "#"
      local pat, err = parse_lua(line:sub(hash and 6 or 5), line, hash or nil)
      return pat, pat and true or err
   end
   local ty, rest = line:match("^(%a%a%a):(.*)$")
   if ty == "fun" or ty == "obj" then
      return {type = ty, text = rest}, false
   elseif ty == "src" then
      local file, lineno = rest:match("^(.*):(%d+)$")
      if not file and rest:match(":") then
         return nil, ("bad line number in '%s' (want src:FILE or src:FILE:LINE)"):format(line)
      end
      return {type = "src", text = rest, file = file or rest, line = lineno and tonumber(lineno) or nil}, false
   end
   return nil, ("bad location '%s': a frame is '...', or starts with fun:, obj:, src: or lua:"):format(line)
end

-- Parse the suppressions in TEXT (NAME for messages). Returns a list of entries, or nil and
-- "NAME:LINE: message" for the first thing Valgrind would reject too, and for a bad Lua line.
function M.parse(text, name)
   name = name or "suppressions"
   local lines = {}
   for l in (text:gsub("\r\n", "\n") .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
   if text:sub(-1) == "\n" or text == "" then lines[#lines] = nil end
   local pos, comments = 0, {}
   -- The next line that is not blank and not a comment (comments are kept for the next entry),
   -- trimmed as Valgrind trims it; nil at the end. IN_ENTRY: `#lua:` lines are not comments.
   local function next_line(in_entry)
      while pos < #lines do
         pos = pos + 1
         local l = lines[pos]:match("^%s*(.-)%s*$")
         if in_entry and l:sub(1, 5) == "#lua:" then
            return l
         elseif l:sub(1, 1) == "#" then
            comments[#comments + 1] = l
         elseif l ~= "" then
            return l
         end
      end
   end
   local function fail(msg, at)
      return nil, ("%s:%d: %s"):format(name, at or math.max(pos, 1), msg)
   end
   local function misplaced_lua(l, what)
      return fail(("Lua frame line '%s' where %s belongs (Lua lines go among the frames)"):format(l, what))
   end
   local entries = {}
   while true do
      local l = next_line()
      if not l then break end
      if l ~= "{" then return fail(("expected '{' or the end of the file, got '%s'"):format(l)) end
      local entry = {file = name, comments = comments, frames = {}, lua = {}}
      comments = {}
      l = next_line(true)
      if not l then return fail("unexpected end of file (expected the entry's name)") end
      if l == "}" then return fail("unexpected '}': the entry has no name") end
      if is_lua_line(l) then return misplaced_lua(l, "the entry's name") end
      entry.name, entry.line = l, pos
      l = next_line(true)
      if not l then return fail("unexpected end of file (expected TOOL:KIND, e.g. Memcheck:Leak)") end
      if is_lua_line(l) then return misplaced_lua(l, "TOOL:KIND") end
      local tools, kind = l:match("^([^:]*):(.*)$")
      if not tools then return fail(("malformed kind line '%s' (want TOOL:KIND, e.g. Memcheck:Leak)"):format(l)) end
      entry.tools, entry.kind = tools, kind
      if has_tool(tools, "CoreError") then
         if not CORE_KINDS[kind] then return fail(("unknown CoreError suppression kind '%s'"):format(kind)) end
         entry.tool = "CoreError"
      elseif has_tool(tools, "Memcheck") then
         if not MEMCHECK_KINDS[kind] then return fail(("unknown Memcheck suppression kind '%s'"):format(kind)) end
         entry.tool = "Memcheck"
      end
      l = next_line(true)
      if not entry.tool then
         -- An entry for another Valgrind tool: kept as it is (when merging), never matched.
         entry.raw = {}
         while l ~= "}" do
            if not l then return fail("unexpected end of file (missing '}')") end
            entry.raw[#entry.raw + 1] = l
            l = next_line(true)
         end
         l = "}"
      end
      local how = entry.tool == "Memcheck" and MEMCHECK_KINDS[kind]
      if how == "extra" then
         if not l or l == "}" or l:match("^fun:") or l:match("^obj:") or l == "..." or is_lua_line(l) then
            return fail(("Memcheck:%s needs its extra line (e.g. %s) before the frames"):format(
               kind, kind == "Param" and "write(buf)" or "malloc(size)"))
         end
         entry.extra = l
         l = next_line(true)
      elseif how == "leak" and l and not (l:match("^fun:") or l:match("^obj:") or l == "..." or l == "}"
                                          or is_lua_line(l)) then
         local set_text = l:match("^match%-leak%-kinds:%s*(.*)$")
         if not set_text then
            return fail(("bad line '%s' after Memcheck:Leak: want 'match-leak-kinds: KINDS' or a fun:, obj:, "
               .. "lua: or ... frame (Valgrind does not take src: here)"):format(l))
         end
         entry.leak_kinds = parse_leak_kinds(set_text)
         if not entry.leak_kinds then
            return fail(("bad match-leak-kinds '%s' (a comma-separated list of definite, indirect, possible, "
               .. "reachable without spaces, or all, or none)"):format(set_text))
         end
         entry.leak_kinds_text = set_text
         l = next_line(true)
      end
      local after_lua = false
      while l ~= "}" do
         if not l then return fail("unexpected end of file (missing '}')") end
         if l == "{" then return fail("unexpected '{' (missing '}' before it)") end
         local frame, lua_or_err = parse_location(l, after_lua)
         if not frame then return fail(lua_or_err) end
         after_lua = lua_or_err
         local list = after_lua and entry.lua or entry.frames
         list[#list + 1] = frame
         l = next_line(true)
      end
      for _, c in ipairs(comments) do entry.comments[#entry.comments + 1] = c end
      comments = {}
      if not entry.raw then
         if #entry.frames == 0 then
            return fail("missing stack trace: an entry needs at least one frame"
               .. (#entry.lua > 0 and " that is not a Lua line (fun:* will do)" or ""))
         end
         local only_dots = true
         for _, f in ipairs(entry.frames) do
            if f.type ~= "..." then only_dots = false end
         end
         if only_dots then return fail("an entry needs at least one frame that is not '...'") end
      end
      entries[#entries + 1] = entry
   end
   return entries
end

-- Read and parse the file at PATH. Returns entries, or nil and a message.
M.read = util.reader(M.parse)

-- Read every file in PATHS, in order. Returns one list of entries, or nil and the first message.
function M.load(paths)
   local all = {}
   for _, path in ipairs(paths) do
      local entries, err = M.read(path)
      if not entries then return nil, err end
      for _, e in ipairs(entries) do all[#all + 1] = e end
   end
   return all
end

-- -- Default files ---------------------------------------------------------------------------

local function exists_dir(path)
   return lfs.attributes(path, "mode") == "directory"
end

-- The folder of the curated default suppression files: $LJLEAK_SUPPRESSIONS_DIR, or next to
-- this module once installed (ljleak/suppressions/), or the checkout's suppressions/. Nil if none.
function M.default_dir()
   local env = os.getenv(const.ENV.SUPPRESSIONS_DIR)
   if env and env ~= "" then return env end
   local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
   for _, dir in ipairs({here .. "/suppressions", here .. "/../../suppressions"}) do
      if exists_dir(dir) then return stdlib.realpath(dir) or dir end
   end
end

-- The *.supp files of DIR (default: M.default_dir()), sorted. Nil and a message if DIR is missing.
function M.default_files(dir)
   dir = dir or M.default_dir()
   if not dir or not exists_dir(dir) then
      return nil, ("the default suppressions folder %s was not found (set LJLEAK_SUPPRESSIONS_DIR, "
         .. "or use --no-default-suppressions)"):format(dir or "ljleak/suppressions")
   end
   local files = {}
   for name in lfs.dir(dir) do
      if name:match("%.supp$") then files[#files + 1] = dir .. "/" .. name end
   end
   table.sort(files)
   return files
end

-- -- Matching --------------------------------------------------------------------------------

local byte = string.byte
local STAR, QUESTION = byte("*"), byte("?")
local EMPTY = {}

-- Does S match GLOB, with Valgrind's wildcards (`*`: any run of characters, `?`: one character)?
-- The classic two-index greedy algorithm: on a mismatch, go back to just after the last `*` and let
-- it take one more character. Earlier stars never need revisiting, so a match costs at most
-- #GLOB * #S steps, whatever the pattern (no backtracking blow-up).
local function glob_match(glob, s)
   if not glob:find("[*?]") then return glob == s end
   local gi, si, ng, ns = 1, 1, #glob, #s
   local star, mark = nil, 0
   while si <= ns do
      local c = byte(glob, gi)
      if c == STAR then
         star, mark, gi = gi, si, gi + 1
      elseif c ~= nil and (c == QUESTION or c == byte(s, si)) then
         gi, si = gi + 1, si + 1
      elseif star then
         mark = mark + 1
         gi, si = star + 1, mark
      else
         return false
      end
   end
   while byte(glob, gi) == STAR do gi = gi + 1 end
   return gi > ng
end
M.glob_match = glob_match

local function field(v)
   if v == nil or type(v) == "userdata" then return nil end   -- absent, or a JSON null
   return v
end

-- What a record's frame is matched as, by Valgrind's rules: an unknown function or object is "???";
-- a frame without a source file never matches src:. A C++ function matches by its linkage
-- (mangled) name, as Valgrind matches, and by its demangled name.
local function frame_matches(pat, frame)
   if pat.type == "fun" then
      local mangled = field(frame.mangled)
      return glob_match(pat.text, field(frame["function"]) or "???")
         or (mangled ~= nil and glob_match(pat.text, mangled))
   elseif pat.type == "obj" then
      return glob_match(pat.text, field(frame.object) or "???")
   elseif pat.type == "src" then
      local file = field(frame.file)
      if not file then return false end
      if not glob_match(pat.file, file) then return false end
      return pat.line == nil or pat.line == field(frame.line)
   end
   return false
end

-- A Lua frame line against a record's Lua frame: SOURCE against the whole source when it has a
-- "/", else against the file name; then the line, or the function (unknown: "?").
local function lua_frame_matches(pat, frame)
   local source = field(frame.source) or "?"
   if not glob_match(pat.source, pat.path and source or source:match("[^/]*$")) then return false end
   if pat.line then return pat.line == field(frame.line) end
   return pat.func == nil or glob_match(pat.func, field(frame["function"]) or "?")
end

-- Valgrind's VG_(generic_match) with matchAll = False: do PATS[1..N] match a prefix of ITEMS, with
-- "..." standing for zero or more items? MATCH(pat, item) compares one line with one item. The
-- set of item positions reachable after each line is carried to the next (an NFA run), so each
-- (line, item) pair is compared at most once: O(N * #ITEMS), whatever the "..." lines.
local function match_seq(pats, n, items, match)
   local m = #items
   local reach, lo, hi = {true}, 1, 1   -- reach[k]: the lines so far can end just before item k
   for i = 1, n do
      local p = pats[i]
      local next_reach, next_lo, next_hi = {}, nil, nil
      if p.type == "..." then
         for k = lo, m + 1 do next_reach[k] = true end
         next_lo, next_hi = lo, m + 1
      else
         for k = lo, math.min(hi, m) do
            if reach[k] and match(p, items[k]) then
               next_reach[k + 1] = true
               next_lo, next_hi = next_lo or k + 1, k + 1
            end
         end
         if not next_lo then return false end
      end
      reach, lo, hi = next_reach, next_lo, next_hi
   end
   return true
end

-- Does ENTRY's kind cover RECORD?
local function kind_matches(entry, rec)
   if rec.supp_kind then
      if entry.tool ~= (rec.supp_tool or "Memcheck") then return false end
      local kind = entry.kind == "Value0" and "Cond" or entry.kind
      if kind ~= rec.supp_kind then return false end
      return entry.extra == nil or entry.extra == rec.supp_extra
   end
   if entry.tool ~= "Memcheck" or entry.kind ~= "Leak" then return false end
   return entry.leak_kinds == nil or entry.leak_kinds[rec.kind] == true
end

-- Does ENTRY suppress RECORD? DEPTH: the engine's stack depth (Valgrind's --num-callers): as
-- Valgrind does, only the entry's first DEPTH C frame lines count. Its C frame lines must match the
-- record's C frames, and its Lua lines the record's Lua frames, each from the innermost down.
function M.matches(entry, rec, depth)
   if not kind_matches(entry, rec) then return false end
   local n = #entry.frames
   if depth and depth > 0 and n > depth then n = depth end
   if not match_seq(entry.frames, n, rec.frames or {}, frame_matches) then return false end
   -- An entry with Lua lines matches only records whose Lua frames match them (both engines give
   -- Lua frames): a record whose Lua location is unknown (JIT code) is not hidden by it. Raw
   -- Valgrind, which reads #lua: lines as comments, matches the same file on its C frames alone.
   if entry.lua and #entry.lua > 0 then
      local lua = field(rec.lua)
      return lua ~= nil and #lua > 0 and match_seq(entry.lua, #entry.lua, lua, lua_frame_matches)
   end
   return true
end

-- The first entry of ENTRIES that suppresses RECORD, or nil.
function M.find(entries, rec, depth)
   for _, e in ipairs(entries) do
      if M.matches(e, rec, depth) then return e end
   end
end

local function entry_id(e)
   return ("%s:%d"):format(e.file or "?", e.line or 0)
end

-- What M.find looks at in a record, as a string (no closure, no call per field: compiled code).
local MEMO_RECORDS = 5000
local key_parts, NIL = {}, "\1"   -- (NIL: an absent field, told apart from an empty one)
local function record_key(rec)
   local p, n = key_parts, 4
   p[1], p[2], p[3], p[4] = field(rec.kind) or NIL, field(rec.supp_kind) or NIL, field(rec.supp_tool) or NIL,
      field(rec.supp_extra) or NIL
   for _, f in ipairs(rec.frames or EMPTY) do
      p[n + 1], p[n + 2], p[n + 3], p[n + 4], p[n + 5] = field(f["function"]) or NIL, field(f.mangled) or NIL,
         field(f.object) or NIL, field(f.file) or NIL, field(f.line) or NIL
      n = n + 5
   end
   n = n + 1
   p[n] = "lua"
   for _, f in ipairs(field(rec.lua) or EMPTY) do
      p[n + 1], p[n + 2], p[n + 3] = field(f.source) or NIL, field(f.line) or NIL, field(f["function"]) or NIL
      n = n + 3
   end
   return table.concat(p, "\0", 1, n)
end

-- Mark every leak and error record of REPORT that an entry suppresses (the first one, in the
-- order given) with suppressed_by = the entry's name. OPTS.depth: see M.matches.
-- Sets REPORT.suppressions to the entries used: {name, file, line, records, blocks, bytes, count},
-- biggest first; `count` is the errors' occurrences.
function M.apply(report, entries, opts)
   opts = opts or {}
   local used, list = {}, {}
   local function use(e, rec)
      local id = entry_id(e)
      local u = used[id]
      if not u then
         u = {name = e.name, file = e.file, line = e.line, records = 0, blocks = 0, bytes = 0, count = 0}
         used[id] = u
         list[#list + 1] = u
      end
      u.records = u.records + 1
      u.blocks = u.blocks + (rec.blocks or 0)
      u.bytes = u.bytes + (rec.bytes or 0)
      u.count = u.count + (rec.count or 0)
   end
   -- Records with the same kind and frames (the same binaries' stacks in many processes) get the
   -- same answer: found once. Not for a report of many records (mostly distinct stacks, whose
   -- keys would cost more than they save).
   local memo = #(report.leaks or EMPTY) + #(report.errors or EMPTY) <= MEMO_RECORDS and {} or nil
   local function find(rec)
      if not memo then return M.find(entries, rec, opts.depth) end
      local key = record_key(rec)
      local e = memo[key]
      if e == nil then
         e = M.find(entries, rec, opts.depth) or false
         memo[key] = e
      end
      return e or nil
   end
   for _, set in ipairs({report.leaks or {}, report.errors or {}}) do
      for _, rec in ipairs(set) do
         if field(rec.suppressed_by) == nil then
            local e = find(rec)
            if e then
               rec.suppressed_by = e.name
               use(e, rec)
            end
         end
      end
   end
   table.sort(list, function(a, b)
      if a.bytes ~= b.bytes then return a.bytes > b.bytes end
      if a.records ~= b.records then return a.records > b.records end
      return entry_id(a) < entry_id(b)
   end)
   report.suppressions = list
   return list
end

-- -- Writing ---------------------------------------------------------------------------------

local function frame_line(f)
   if f.type == "..." then return "..." end
   return f.type .. ":" .. f.text
end

-- A Lua line as written: `#lua:` or `lua:` as it was read (a bare "..." stays bare).
local function lua_line(f)
   if f.bare then return "..." end
   return (f.hash and "#lua:" or "lua:") .. (f.type == "..." and "..." or f.text)
end

-- ENTRY as text, its comments first.
function M.format_entry(e)
   local out = {}
   for _, c in ipairs(e.comments or {}) do out[#out + 1] = c end
   out[#out + 1] = "{"
   out[#out + 1] = "   " .. e.name
   out[#out + 1] = ("   %s:%s"):format(e.tools or e.tool or "Memcheck", e.kind)
   if e.extra then out[#out + 1] = "   " .. e.extra end
   if e.leak_kinds_text then out[#out + 1] = "   match-leak-kinds: " .. e.leak_kinds_text end
   for _, l in ipairs(e.raw or {}) do out[#out + 1] = "   " .. l end
   for _, f in ipairs(e.frames) do out[#out + 1] = "   " .. frame_line(f) end
   for _, f in ipairs(e.lua or {}) do out[#out + 1] = "   " .. lua_line(f) end
   out[#out + 1] = "}"
   return table.concat(out, "\n") .. "\n"
end

-- ENTRIES as a file's text; HEADER (optional) is a list of comment lines put first.
function M.format(entries, header)
   local out = {}
   if header and #header > 0 then out[1] = table.concat(header, "\n") .. "\n" end
   for _, e in ipairs(entries) do out[#out + 1] = M.format_entry(e) end
   return table.concat(out, "\n")
end

-- What makes two entries the same, apart from names, comments, leak kinds and the form of Lua lines.
local function body_key(e)
   local t = {e.tools or "", e.kind or "", e.extra or ""}
   for _, l in ipairs(e.raw or {}) do t[#t + 1] = l end
   for _, f in ipairs(e.frames) do t[#t + 1] = frame_line(f) end
   for _, f in ipairs(e.lua or {}) do t[#t + 1] = "lua:" .. (f.type == "..." and "..." or f.text) end
   return table.concat(t, "\n")
end

-- Canonical text of a leak-kind set, in Valgrind's order; nil for "all kinds".
local function kinds_text(set)
   if not set then return nil end
   local t = {}
   for _, k in ipairs(M.LEAK_KINDS) do
      if set[k] then t[#t + 1] = k end
   end
   if #t == #M.LEAK_KINDS then return nil end
   return #t == 0 and "none" or table.concat(t, ",")
end

-- Give NAME a suffix until no entry in TAKEN has it; returns the name used.
local function unique_name(name, taken)
   local n, candidate = 1, name
   while taken[candidate] do
      n = n + 1
      candidate = ("%s-%d"):format(name, n)
   end
   taken[candidate] = true
   return candidate
end

-- One entry per distinct body (kind, extra line and frames), in first-seen order: the first
-- entry's name and comments are kept; for leak entries the kinds are joined (an entry without
-- match-leak-kinds covers all). Names that two different entries share get a suffix.
function M.merge(entries)
   local out, by_key, taken = {}, {}, {}
   for _, e in ipairs(entries) do
      local key = body_key(e)
      local kept = by_key[key]
      if kept then
         if kept.kind == "Leak" then
            if kept.leak_kinds and e.leak_kinds then
               for k in pairs(e.leak_kinds) do kept.leak_kinds[k] = true end
            else
               kept.leak_kinds = nil
            end
            kept.leak_kinds_text = kinds_text(kept.leak_kinds)
         end
         for _, c in ipairs(e.comments or {}) do
            local dup = false
            for _, c0 in ipairs(kept.comments) do
               if c0 == c then dup = true end
            end
            if not dup then kept.comments[#kept.comments + 1] = c end
         end
      else
         local copy = {}
         for k, v in pairs(e) do copy[k] = v end
         copy.comments = {unpack(e.comments or {})}
         if e.leak_kinds then
            copy.leak_kinds = {}
            for k in pairs(e.leak_kinds) do copy.leak_kinds[k] = true end
         end
         by_key[key] = copy
         out[#out + 1] = copy
      end
   end
   for _, e in ipairs(out) do e.name = unique_name(e.name, taken) end
   return out
end

-- -- Generating ------------------------------------------------------------------------------

local GENERATED = "# Suppressions generated by ljleak"

-- The comment lines that open a file of entries generated from REPORT.
-- A suppression file that ljleak wrote (--gen-suppressions, `suppressions merge -o`) starts so:
-- writing over it loses nothing the user wrote by hand.
M.MERGED_HEADER = "# Merged by ljleak from "
function M.owns(head)
   return head:sub(1, #M.MERGED_HEADER) == M.MERGED_HEADER or head:match("^# Suppressions generated by ljleak") ~= nil
end

function M.generated_header(report)
   return {
      ("%s %s from `%s` (%s engine)."):format(GENERATED, report.version or "", table.concat(report.command or {}, " "),
         report.engine or "?"),
      "# Each entry is named after its leaking site. Keep only what is not a bug, and say why.",
   }
end

-- Is the file at PATH one that ljleak generated (so that writing over it loses nothing)?
function M.is_generated(path)
   local f = io.open(path, "rb")
   if not f then return false end
   local head = f:read(#GENERATED) or ""
   f:close()
   return head == GENERATED
end

-- A record's frame as a location line: fun: when the function is known (its linkage name, as
-- Valgrind's --gen-suppressions writes it), else obj:; a frame in no object (JIT code) is obj:???,
-- which matches only such frames (Valgrind writes obj:*, which would match any frame), and true.
local function location_of(frame)
   local fn, obj = field(frame.mangled) or field(frame["function"]), field(frame.object)
   if fn then return {type = "fun", text = fn} end
   if obj then return {type = "obj", text = obj} end
   return {type = "obj", text = "???"}, true
end

local ALLOC = {malloc = true, calloc = true, realloc = true, reallocarray = true, memalign = true,
               posix_memalign = true, aligned_alloc = true, valloc = true, pvalloc = true, free = true}

-- "app.lua:12": a Lua frame's file name and its line (or function), as a Lua frame line has them.
local function lua_where(f)
   local base = (field(f.source) or "?"):match("[^/]*$")
   local fn = field(f["function"])
   return (base ~= "" and base or "*") .. ":" .. (field(f.line) or fn ~= "" and fn or "*")
end

-- A record's Lua frame as a Lua frame line in the form raw Valgrind skips (#lua:FILE:LINE).
local function lua_location_of(f)
   local where = lua_where(f)
   return (parse_lua(where, "#lua:" .. where, true))
end

-- A short name for where REC comes from: for a block that Lua code allocated (the frame that
-- called the allocator has no name: LuaJIT's VM or JIT code), its Lua line; else the first named
-- function that is not the allocator, else the file name of the first object that is not the
-- allocator's, else "jit-code".
local function site_name(rec)
   local lua, caller = field(rec.lua), (rec.frames or {})[2]
   if lua and lua[1] and caller and field(caller["function"]) == nil then return lua_where(lua[1]) end
   for _, f in ipairs(rec.frames or {}) do
      local fn = field(f["function"])
      if fn and not ALLOC[fn] then return fn end
   end
   for _, f in ipairs(rec.frames or {}) do
      local obj = field(f.object)
      if obj and not ALLOC[field(f["function"]) or ""] then return obj:match("[^/]*$") end
   end
   return "jit-code"
end

local plural = util.plural

-- Entries for every unsuppressed leak and error record of REPORT: one per distinct stack (and
-- error kind; a leak entry lists the leak kinds it covers), named after the leaking site, each with
-- a comment saying what it covered. The C frames are the record's, up to and including the first
-- frame of unknown code (JIT code), after which stacks are not reliable; then the record's Lua
-- frames as `#lua:FILE:LINE` lines, which ljleak matches and raw Valgrind skips.
function M.generate(report)
   local list, by_key = {}, {}
   local function add(rec, e)
      local frames, lua = {}, {}
      for _, f in ipairs(rec.frames or {}) do
         local loc, unknown = location_of(f)
         frames[#frames + 1] = loc
         if unknown then break end
      end
      if #frames == 0 then return end
      for _, f in ipairs(field(rec.lua) or {}) do lua[#lua + 1] = lua_location_of(f) end
      e.frames, e.lua = frames, lua
      local key = body_key(e)
      local g = by_key[key]
      if not g then
         g = e
         g.records, g.blocks, g.bytes, g.count, g.pids = 0, 0, 0, 0, {}
         by_key[key] = g
         list[#list + 1] = g
      elseif e.leak_kinds then
         for k in pairs(e.leak_kinds) do g.leak_kinds[k] = true end
      end
      g.records = g.records + 1
      g.blocks, g.bytes = g.blocks + (rec.blocks or 0), g.bytes + (rec.bytes or 0)
      g.count = g.count + (rec.count or 1)
      if rec.pid and #g.pids < 4 and g.pids[#g.pids] ~= rec.pid then g.pids[#g.pids + 1] = rec.pid end
   end
   for _, rec in ipairs(report.leaks or {}) do
      if field(rec.suppressed_by) == nil and is_leak_kind[rec.kind] then
         add(rec, {site = site_name(rec), tools = "Memcheck", tool = "Memcheck", kind = "Leak",
                   leak_kinds = {[rec.kind] = true}})
      end
   end
   for _, rec in ipairs(report.errors or {}) do
      if field(rec.suppressed_by) == nil and rec.supp_kind then
         add(rec, {site = site_name(rec), what = field(rec.message) or rec.kind, error_kind = rec.kind or rec.supp_kind,
                   tools = rec.supp_tool or "Memcheck", tool = rec.supp_tool or "Memcheck",
                   kind = rec.supp_kind, extra = field(rec.supp_extra)})
      end
   end
   local command = table.concat(report.command or {}, " ")
   local taken = {}
   for _, e in ipairs(list) do
      local what
      if e.kind == "Leak" then
         e.leak_kinds_text = kinds_text(e.leak_kinds)
         if not e.leak_kinds_text then e.leak_kinds = nil end
         local single = e.leak_kinds_text and not e.leak_kinds_text:find(",")
         e.name = (single and e.leak_kinds_text .. "-leak" or "leak") .. "-in-" .. e.site
         what = ("%s, %s in %s"):format(e.leak_kinds_text or "all kinds", plural(e.bytes, "byte"),
                                       plural(e.blocks, "block"))
      else
         e.name = e.error_kind .. "-in-" .. e.site
         what = ("%s, %s"):format(e.what, plural(e.count, "time"))
      end
      e.name = unique_name(e.name, taken)
      local pids = {}
      for i, p in ipairs(e.pids) do pids[i] = tostring(p) end
      e.comments = {
         ("# Generated by ljleak (%s engine) from `%s`:"):format(report.engine or "?", command),
         ("#   %s, %s, pid %s."):format(what, plural(e.records, "record"), table.concat(pids, ", ")),
         "# Replace these lines with the reason it is not a bug and the versions it was seen on.",
      }
   end
   return list
end

return M
