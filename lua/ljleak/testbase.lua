-- Test::Nginx's .t files (Test::Base blocks after __DATA__): block names, their sections and the
-- lines they are on; and where a line of the nginx.conf that Test::Nginx wrote for a block, or of
-- a file of its `--- user_files`, came from in the .t file.
local util = require "ljleak.util"

local M = {}

-- -- Reading a .t file -----------------------------------------------------------------------

-- The blocks of the Test::Base text TEXT: {name = "TEST 1: sanity", line = N, sections = {NAME =
-- {line = N (its header), lines = {...}}}, files = {NAME = line of its first content line}}, in
-- order; and a set of their names.
function M.parse(text)
   local blocks, names = {}, {}
   local block, section
   local n, in_data = 0, false
   for line in (text .. (text:sub(-1) == "\n" and "" or "\n")):gmatch("([^\n]*)\n") do
      n = n + 1
      line = line:gsub("\r$", "")
      if not in_data then
         in_data = line == "__DATA__"
      elseif line == "__END__" then
         break
      elseif line:match("^===%s") then
         block = {name = line:match("^===%s+(.-)%s*$"), line = n, sections = {}, files = {}}
         blocks[#blocks + 1] = block
         names[block.name] = true
         section = nil
      elseif block and line:match("^%-%-%-[ \t]+%w") then
         local name, rest = line:match("^%-%-%-[ \t]+([%w_]+)(.*)$")
         section = {line = n, lines = {}, inline = rest:match("^[ \t]*:") ~= nil}
         block.sections[name] = section
         if section.inline then section = nil end
      elseif section then
         section.lines[#section.lines + 1] = line
         local file = block.sections.user_files == section and line:match("^>>>%s+(%S+)")
         if file then block.files[file] = n + 1 end
      end
   end
   return blocks, names
end

local cache = {}

-- The parsed .t file at PATH (cached): {blocks = ..., names = ...}, or nil and a message.
function M.read(path)
   local t = cache[path]
   if t then return t end
   local text, err = util.read_file(path)
   if not text then return nil, err end
   local blocks, names = M.parse(text)
   t = {blocks = blocks, names = names, by_name = {}}
   for _, b in ipairs(blocks) do t.by_name[b.name] = t.by_name[b.name] or b end
   cache[path] = t
   return t
end

-- -- From nginx.conf back to the .t file -----------------------------------------------------

-- The Lua pattern of a line of a section as it shows in nginx.conf: Test::Nginx replaces each
-- $TEST_NGINX_NAME with that variable's value, which the pattern takes as anything. FIRST: the
-- line may also have text before it (Test::Nginx puts the load_module lines before main_config).
local function line_pattern(line, first)
   local pat = line:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("%%%$TEST_NGINX_[%w_]+", ".-")
   return (first and "^.-" or "^") .. pat .. "$"
end

local function rtrim(s)
   return (s:gsub("%s+$", ""))
end

-- The sections whose text Test::Nginx copies into nginx.conf.
local CONF_SECTIONS = {"main_config", "http_config", "config", "post_main_config"}

-- Where BLOCK's configuration sections are in CONF_LINES: {first conf line, last, first .t line}
-- for each found; and how many sections with text the block has.
local function spans_of(block, conf_lines)
   local spans, wanted = {}, 0
   for _, name in ipairs(CONF_SECTIONS) do
      local sec = block.sections[name]
      if sec and not sec.inline then
         local first, last = 1, #sec.lines
         while first <= last and sec.lines[first]:match("^%s*$") do first = first + 1 end
         while last >= first and sec.lines[last]:match("^%s*$") do last = last - 1 end
         if first <= last then
            wanted = wanted + 1
            local pats = {}
            for i = first, last do pats[#pats + 1] = line_pattern(rtrim(sec.lines[i]), i == first) end
            for at = 1, #conf_lines - #pats + 1 do
               local ok = true
               for k, pat in ipairs(pats) do
                  if not rtrim(conf_lines[at + k - 1]):match(pat) then
                     ok = false
                     break
                  end
               end
               if ok then
                  spans[#spans + 1] = {at, at + #pats - 1, sec.line + first}
                  break
               end
            end
         end
      end
   end
   return spans, wanted
end

-- A function from a line number of CONF_LINES (nginx.conf as Test::Nginx wrote it for BLOCK) to
-- the line of the .t file it came from, or nil.
function M.conf_map(block, conf_lines)
   local spans = spans_of(block, conf_lines)
   return function(n)
      for _, s in ipairs(spans) do
         if n >= s[1] and n <= s[2] then return s[3] + (n - s[1]) end
      end
   end
end

-- The one block of T (M.read's) whose every configuration section is in CONF_TEXT (an nginx.conf
-- Test::Nginx wrote), or nil: none, or more than one (blocks with the same configuration).
function M.block_of_conf(t, conf_text)
   local lines, found = M.lines(conf_text), nil
   for _, block in ipairs(t.blocks or {}) do
      local spans, wanted = spans_of(block, lines)
      if wanted > 0 and #spans == wanted then
         if found then return nil end
         found = block
      end
   end
   return found
end

-- The lines of TEXT.
function M.lines(text)
   local lines = {}
   for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
   return lines
end

return M
