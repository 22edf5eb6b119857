-- JSON reports: written with keys in schema order, arrays marked explicitly, in chunks to a sink
-- (reports of any size are never one string), always valid UTF-8; and read back, shape checked.
local buffer = require "string.buffer"
local cjson = require "cjson"

local const = require "ljleak.const"

local M = {}

-- JSON null, as cjson.decode gives it.
M.null = cjson.null

-- -- Sinks -------------------------------------------------------------------------------------
-- A sink is {b = string.buffer, write = function(buf) or nil}: writers put text into sink.b and
-- call drain(sink) between items; with a WRITE, everything past CHUNK bytes goes out through it.

M.CHUNK = 65536

function M.sink(write)
   return {b = buffer.new(M.CHUNK), write = write}
end

-- Hand what SINK holds to its WRITE, if it holds CHUNK bytes (or FORCE).
function M.drain(sink, force)
   local b = sink.b
   if sink.write and (force or #b >= M.CHUNK) and #b > 0 then
      sink.write(b)
      b:reset()
   end
end

-- -- UTF-8 ---------------------------------------------------------------------------------------
-- File names, function names and Lua sources are bytes; a report must be valid UTF-8. A byte that
-- is not part of a well-formed UTF-8 sequence stands for the code point of the same number
-- (U+0080 to U+00FF, as if the text were Latin-1).

-- Length of the well-formed UTF-8 sequence at byte I of S (lead byte C >= 0x80), or nil.
local function sequence_length(s, i, c)
   local byte = string.byte
   local c1 = byte(s, i + 1)
   if not c1 then return nil end
   if c >= 0xC2 and c <= 0xDF then
      return c1 >= 0x80 and c1 <= 0xBF and 2 or nil
   end
   local lo, hi = 0x80, 0xBF
   if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F
   elseif c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
   if c1 < lo or c1 > hi then return nil end
   local c2 = byte(s, i + 2)
   if not c2 or c2 < 0x80 or c2 > 0xBF then return nil end
   if c >= 0xE0 and c <= 0xEF then return 3 end
   if c < 0xF0 or c > 0xF4 then return nil end
   local c3 = byte(s, i + 3)
   return c3 and c3 >= 0x80 and c3 <= 0xBF and 4 or nil
end

-- S with each byte outside well-formed UTF-8 replaced by BAD(byte) (a string).
function M.fix_utf8(s, bad)
   if not s:find("[\128-\255]") then return s end
   local out, i, n = {}, 1, #s
   local start = 1
   while i <= n do
      local c = s:byte(i)
      if c < 0x80 then
         i = i + 1
      else
         local len = sequence_length(s, i, c)
         if len then
            i = i + len
         else
            out[#out + 1] = s:sub(start, i - 1)
            out[#out + 1] = bad(c)
            i = i + 1
            start = i
         end
      end
   end
   out[#out + 1] = s:sub(start)
   return table.concat(out)
end

-- The UTF-8 encoding of code point C (below 0x800).
function M.latin1(c)
   if c < 0x80 then return string.char(c) end
   return string.char(0xC0 + math.floor(c / 64), 0x80 + c % 64)
end

local markup_escapes = {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;"}

-- Text for XML and HTML (elements and attributes): markup characters escaped, control characters
-- as '?', and a byte that is not UTF-8 as the character of its number (U+0080 to U+00FF).
function M.markup(s)
   s = tostring(s):gsub("[&<>\"']", markup_escapes):gsub("[%z\1-\8\11\12\14-\31]", "?")
   return (M.fix_utf8(s, M.latin1))
end

-- -- Encoding --------------------------------------------------------------------------------------
-- cjson 2.1.0 encodes an empty table as {} (no array_mt yet), escapes "/" and orders keys at
-- random; this encoder marks arrays explicitly and writes keys in schema order.

local array_mt = {__name = "ljleak.json_array"}

-- Mark T as a JSON array (so that an empty one is written as []).
function M.array(t)
   return setmetatable(t or {}, array_mt)
end

-- Keys of these names hold arrays wherever they are (so that an empty one is written as []).
local ARRAY_KEYS = {command = true, leaks = true, errors = true, processes = true, frames = true, lua = true,
                    suppressions = true, problems = true, unstopped_threads = true, fail_on = true, tests = true,
                    shards = true, sites = true, growth = true}

-- Keys that a leak record always has: absent ones are written as null.
local KEY_ORDER = {
   "schema", "tool", "version", "engine", "command", "exit_status", "interrupted", "killed", "started", "duration",
   "hostname", "verdict", "summary", "heap", "leaks", "growth", "errors", "problems", "processes",
   "definite", "indirect", "possible", "reachable", "suppressed", "error_totals", "in_use", "allocs", "frees",
   "allocated", "exit_code", "why", "fail_on",
   "id", "kind", "blocks", "bytes", "pid", "frames", "lua", "test", "note", "owner", "suppressed_by",
   "function", "mangled", "file", "dir", "line", "object", "offset", "address", "inlined", "source", "message",
   "ppid", "exe", "checked", "reason", "lua_state", "unstopped_threads", "truncated", "stats",
   "tests", "baseline", "shards",
}
local key_rank = {}
for i, k in ipairs(KEY_ORDER) do key_rank[k] = i end

local function key_less(a, b)
   local ra, rb = key_rank[a], key_rank[b]
   if ra and rb then return ra < rb end
   if ra or rb then return ra ~= nil end
   return a < b
end

local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                 ["\r"] = "\\r", ["\t"] = "\\t"}

local function u_escape(c)
   return ("\\u%04x"):format(c)
end

-- Strings known to need no escape (keys, kinds, file names: they repeat), up to PLAIN_MAX.
local plain, plain_count, PLAIN_MAX = {}, 0, 65536

local function put_string(b, s)
   if plain[s] then
      b:put('"', s, '"')
      return
   end
   if not s:find('[%c"\\\128-\255]') then
      if plain_count >= PLAIN_MAX then plain, plain_count = {}, 0 end
      plain[s], plain_count = true, plain_count + 1
      b:put('"', s, '"')
      return
   end
   s = s:gsub('[%c"\\]', function(c) return escapes[c] or u_escape(c:byte()) end)
   b:put('"', M.fix_utf8(s, u_escape), '"')
end

local null, huge, floor = M.null, math.huge, math.floor

local function put_scalar(b, v)
   local tv = type(v)
   if v == nil or v == null then
      b:put("null")
   elseif tv == "string" then
      put_string(b, v)
   elseif tv == "number" then
      if v ~= v or v == huge or v == -huge then
         error("cannot encode " .. tostring(v) .. " in JSON")
      end
      if v == floor(v) and v < 2^53 and v > -2^53 then
         b:putf("%d", v)
      else
         b:putf("%.17g", v)
      end
   elseif tv == "boolean" then
      b:put(v and "true" or "false")
   else
      error("cannot encode a " .. tv .. " in JSON")
   end
end

local function is_array(t, key)
   if getmetatable(t) == array_mt or (key and ARRAY_KEYS[key]) then return true end
   local n = #t
   if n == 0 then return false end
   local count = 0
   for _ in pairs(t) do count = count + 1 end
   return count == n
end

-- The keys of object T in schema order, with those of DEFAULTS that T lacks.
local function sorted_keys(t, defaults)
   local keys = {}
   -- next(), not pairs(): LuaJIT 2.1-20230119 (Debian 12) can loop for ever in a compiled pairs()
   -- loop (ITERN; the trace exits at the same key again), as it did here in a traced busted
   -- process, where ljleak.busted encodes a line per test.
   local key = next(t)
   while key ~= nil do
      if type(key) ~= "string" then error("cannot encode a table with a " .. type(key) .. " key as a JSON object") end
      keys[#keys + 1] = key
      key = next(t, key)
   end
   if defaults then
      for k in pairs(defaults) do
         if t[k] == nil then keys[#keys + 1] = k end
      end
   end
   -- An insertion sort: objects have few keys, and table.sort would call key_less from C.
   for i = 2, #keys do
      local k, j = keys[i], i - 1
      while j >= 1 and key_less(k, keys[j]) do
         keys[j + 1] = keys[j]
         j = j - 1
      end
      keys[j + 1] = k
   end
   return keys
end

-- What the items of an array under a given key get when they lack a field.
local EMPTY = M.array({})
local ITEM_DEFAULTS = {
   leaks = {frames = EMPTY, lua = EMPTY, test = null, suppressed_by = null},
   errors = {lua = EMPTY},
}

local Writer = {}
Writer.__index = Writer

-- Containers holding only scalars go on one line; others get one item per line. KEY: the key V
-- is under; DEFAULTS: fields V gets when it lacks them. The one-line text of a container met a
-- second time (a frame shared by many records) is kept and reused.
function Writer:value(v, indent, key, defaults)
   local b = self.sink.b
   if type(v) ~= "table" then return put_scalar(b, v) end
   local seen = self.flat[v]
   if seen and seen ~= true then
      b:put(seen)
      return
   end
   local array = is_array(v, key)
   local keys, n
   local flat = true
   if array then
      n = #v
      for i = 1, n do
         if type(v[i]) == "table" then flat = false break end
      end
   else
      keys = sorted_keys(v, defaults)
      n = #keys
      for i = 1, n do
         local x = v[keys[i]]
         if type(x) == "table" or (x == nil and type(defaults[keys[i]]) == "table") then flat = false break end
      end
   end
   local open, close = array and "[" or "{", array and "]" or "}"
   if n == 0 then
      b:put(open, close)
      return
   end
   if flat and seen then  -- the second time: keep its text
      self.sink.b = self.scratch
      self:items(v, n, array, keys, open, close, true, indent, key, defaults)
      self.sink.b = b
      local text = self.scratch:get()
      self.flat[v] = text
      b:put(text)
      return
   end
   self:items(v, n, array, keys, open, close, flat, indent, key, defaults)
   if flat then self.flat[v] = true end
end

function Writer:items(v, n, array, keys, open, close, flat, indent, key, defaults)
   local b = self.sink.b
   local inner = indent .. "  "
   b:put(open)
   if not flat then b:put("\n", inner) end
   local sep = flat and ", " or ",\n" .. inner
   local item_defaults = array and ITEM_DEFAULTS[key]
   for i = 1, n do
      if i > 1 then b:put(sep) end
      if array then
         self:value(v[i], inner, nil, item_defaults)
      else
         local k = keys[i]
         local x = v[k]
         if x == nil then x = defaults[k] end
         put_string(b, k)
         b:put(": ")
         self:value(x, inner, k)
      end
      if not flat then
         M.drain(self.sink)
         b = self.sink.b
      end
   end
   if not flat then b:put("\n", indent) end
   b:put(close)
end

-- Write V as JSON text to SINK (see M.sink), then drain it. V is built from tables, strings,
-- numbers, booleans and M.null; a table under a key named leaks, frames, lua, command, errors,
-- processes or suppressions is an array; a leak record's absent test and suppressed_by are null,
-- its absent frames and lua, and an error's absent lua, []. DEFAULTS: fields V gets if absent.
function M.write(v, sink, defaults)
   local w = setmetatable({sink = sink, flat = setmetatable({}, {__mode = "k"}), scratch = buffer.new()}, Writer)
   w:value(v, "", nil, defaults)
   M.drain(sink, true)
end

-- JSON text for the scalar V (a string, number, boolean, nil or M.null), as M.write writes it:
-- for a line of a few known fields, without a writer's tables and buffers.
local scalar_buf = buffer.new()
function M.scalar(v)
   put_scalar(scalar_buf, v)
   return scalar_buf:get()
end

-- JSON text for V (as M.write writes it).
function M.encode(v)
   local sink = M.sink()
   M.write(v, sink)
   return sink.b:tostring()
end

-- -- Reading a saved report ------------------------------------------------------------------
-- `ljleak report FILE.json` reads what `--json` wrote; a file of another shape is refused with
-- the JSON path where it broke (indexes from 0, as jq writes them: leaks[3].frames).

local EISDIR = 21
local KINDS_SET = {}
for _, k in ipairs(const.KINDS) do KINDS_SET[k] = true end
M.SCHEMA = 1

local function is_integer(v)
   return type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53
end

local function is_list(v)
   if type(v) ~= "table" then return false end
   local n = #v
   for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then return false end
   end
   return true
end

local function is_map(v)
   if type(v) ~= "table" then return false end
   for k in pairs(v) do
      if type(k) ~= "string" then return false end
   end
   return true
end

-- What V is, for a message.
local function describe(v)
   if v == M.null then return "null" end
   local t = type(v)
   if t == "string" then return ("a string (%q)"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
   if t == "number" or t == "boolean" then return ("%s (%s)"):format(t == "number" and "a number" or "a boolean",
      tostring(v)) end
   if next(v) == nil then return "an empty array" end
   return is_list(v) and "an array" or "an object"
end

-- Shapes: {what = "...", test = function(v)}; {array = shape}; {fields = {name = shape},
-- required = {name, ...}}. A field may be absent or null unless required.
local function scalar(what, test) return {what = what, test = test} end
local STRING = scalar("a string", function(v) return type(v) == "string" end)
local INTEGER = scalar("an integer", is_integer)
local COUNT = scalar("a count (an integer >= 0)", function(v) return is_integer(v) and v >= 0 end)
local SECONDS = scalar("a number of seconds (>= 0)", function(v) return type(v) == "number" and v >= 0 and v < 2^53 end)
local BOOLEAN = scalar("true or false", function(v) return type(v) == "boolean" end)
local KIND = scalar("a leak kind (" .. table.concat(const.KINDS, ", ") .. ")", function(v) return KINDS_SET[v] end)
local function array_of(item) return {what = "an array", array = item} end
local function object(fields, required) return {what = "an object", fields = fields, required = required or {}} end

local C_FRAME = object({["function"] = STRING, mangled = STRING, file = STRING, dir = STRING, line = INTEGER,
                        object = STRING, offset = STRING, address = STRING, inlined = BOOLEAN})
local LUA_FRAME = object({source = STRING, line = INTEGER, ["function"] = STRING, approximate = BOOLEAN,
                          test_file = STRING, test_line = INTEGER})
local AMOUNT = object({blocks = COUNT, bytes = COUNT}, {"blocks", "bytes"})
local HEAP = object({in_use = AMOUNT, allocs = COUNT, frees = COUNT, allocated = COUNT},
                    {"in_use", "allocs", "frees", "allocated"})
local REPORT = object({
   schema = INTEGER, tool = STRING, version = STRING, engine = STRING, command = array_of(STRING),
   exit_status = INTEGER, interrupted = STRING, killed = STRING, started = STRING, duration = SECONDS,
   hostname = STRING,
   verdict = object({exit_code = INTEGER, why = STRING, fail_on = array_of(STRING)}, {"exit_code"}),
   summary = object({definite = AMOUNT, indirect = AMOUNT, possible = AMOUNT, reachable = AMOUNT,
                     suppressed = AMOUNT, error_totals = object({records = COUNT, count = COUNT})}),
   heap = HEAP,
   leaks = array_of(object({id = COUNT, kind = KIND, blocks = COUNT, bytes = COUNT, pid = INTEGER,
                            frames = array_of(C_FRAME), lua = array_of(LUA_FRAME), test = STRING, note = STRING,
                            owner = COUNT, suppressed_by = STRING},
                           {"kind", "blocks", "bytes"})),
   errors = array_of(object({kind = STRING, message = STRING, pid = INTEGER, count = COUNT, test = STRING,
                             lua = array_of(LUA_FRAME), frames = array_of(C_FRAME), suppressed_by = STRING,
                             aux = array_of(object({what = STRING, frames = array_of(C_FRAME)}))},
                            {"kind", "message"})),
   processes = array_of(object({pid = INTEGER, ppid = INTEGER, exe = STRING, command = array_of(STRING),
                                lua_state = STRING, checked = BOOLEAN, heap = HEAP})),
   tests = array_of(object({name = STRING, file = STRING, line = INTEGER, time = SECONDS, status = STRING,
                            pid = INTEGER, class = STRING, case = STRING}, {"name"})),
   suppressions = array_of(object({name = STRING, file = STRING, line = INTEGER, records = COUNT, blocks = COUNT,
                                   bytes = COUNT, count = COUNT}, {"name"})),
}, {"schema", "tool", "leaks"})

-- Nil if V (at PATH) has SHAPE, else "PATH: what was expected, what was found".
local function check_shape(v, shape, path)
   if shape.test then
      if shape.test(v) then return nil end
   elseif shape.array then
      if is_list(v) then
         for i, item in ipairs(v) do
            local err = check_shape(item, shape.array, ("%s[%d]"):format(path, i - 1))
            if err then return err end
         end
         return nil
      end
   elseif is_map(v) then
      for _, name in ipairs(shape.required) do
         if v[name] == nil or v[name] == M.null then
            return ("%s: missing \"%s\""):format(path ~= "" and path or "the top object", name)
         end
      end
      for name, field in pairs(shape.fields) do
         local x = v[name]
         if x ~= nil and x ~= M.null then
            local err = check_shape(x, field, path ~= "" and path .. "." .. name or name)
            if err then return err end
         end
      end
      return nil
   end
   return ("%s: expected %s, found %s"):format(path ~= "" and path or "the top level", shape.what, describe(v))
end

local function strip_nulls(v)
   if type(v) ~= "table" then return v end
   for k, x in pairs(v) do
      if x == M.null then v[k] = nil else strip_nulls(x) end
   end
   return v
end

-- Decode the JSON report in TEXT (NAME: its file, for messages). Returns the report (JSON nulls
-- removed) or nil and one line: what was expected and where it broke.
function M.decode(text, name)
   name = name or "report"
   if text:match("^%s*$") then return nil, ("%s: empty; expected a JSON report (ljleak run --json)"):format(name) end
   local ok, data = pcall(cjson.decode, text)
   if not ok then
      local msg = tostring(data)
      local at = tonumber(msg:match("at character (%d+)") or "")
      if msg:match("T_END") or (at and at > #text) then
         return nil, ("%s: the JSON ends early, at byte %d (a truncated file?)"):format(name, #text)
      end
      return nil, ("%s: not valid JSON: %s"):format(name, msg)
   end
   if not is_map(data) or data.tool ~= "ljleak" then
      return nil, ("%s: not an ljleak report (expected a JSON object with \"tool\": \"ljleak\")"):format(name)
   end
   if data.schema ~= M.SCHEMA then
      return nil, ("%s: report schema %s; this ljleak reads schema %d"):format(name, tostring(data.schema), M.SCHEMA)
   end
   local err = check_shape(data, REPORT, "")
   if err then return nil, ("%s: %s"):format(name, err) end
   return strip_nulls(data)
end

-- Read the JSON report at PATH. Returns the report or nil, message.
function M.read(path)
   local f, err = io.open(path, "rb")
   if not f then return nil, err end
   local text, rerr, code = f:read("*a")
   f:close()
   if code == EISDIR then return nil, ("%s: is a directory; expected a JSON report file"):format(path) end
   if not text then return nil, rerr or ("%s: cannot read it"):format(path) end
   return M.decode(text, path)
end

return M
