-- busted spec for the HTML report, rendered in a real headless Chromium (Debian's `chromium`,
-- which .ci/deps.sh installs; pending, saying why, when it is not there): the page is loaded, its
-- script runs, and the DOM Chromium dumps must show the JSON report's numbers, the records, and a
-- flame graph with the expected frames whose widths are proportional to their bytes; its state
-- (filter, sort, zoom) comes from the address; a screenshot is taken; ten thousand records stay
-- usable. Chromium itself runs outside ljleak's tracker (make test's self-check runs this spec).
local cjson = require "cjson"
local lfs = require "lfs"
local h = require "t.helper"

local CHROMIUM_OPTS = {"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                       "--disable-background-networking"}

local function find_chromium()
   for dir in ((os.getenv("PATH") or "/usr/bin:/bin") .. ":"):gmatch("([^:]*):") do
      for _, name in ipairs({"chromium", "chromium-browser"}) do
         local path = (dir == "" and "." or dir) .. "/" .. name
         if lfs.attributes(path, "mode") == "file" then return path end
      end
   end
end

local CHROMIUM = find_chromium()

-- Chromium on the page at PATH (with #HASH), with more ARGS; returns its stdout, failing the test
-- when it fails. Each run has a profile folder of its own.
local function chromium(path, hash, args)
   local profile = h.tmpdir()
   local argv = {CHROMIUM}
   for _, a in ipairs(CHROMIUM_OPTS) do argv[#argv + 1] = a end
   argv[#argv + 1] = "--user-data-dir=" .. profile
   for _, a in ipairs(args) do argv[#argv + 1] = a end
   argv[#argv + 1] = "file://" .. path .. (hash and "#" .. hash or "")
   local code, out, err = h.run(argv, {env = h.UNTRACED})
   h.rmtree(profile)
   assert.are.equal(0, code, err)
   return out
end

-- The DOM of the page at PATH once loaded (its script has run).
local function dom(path, hash)
   local out = chromium(path, hash, {"--window-size=1280,1600", "--dump-dom"})
   assert.matches('<body data-ready="1">', out, 1, true)   -- the script ran to its end
   return out
end

-- -- Reading the DOM -------------------------------------------------------------------------

local entities = {amp = "&", lt = "<", gt = ">", quot = '"', ["#39"] = "'", apos = "'"}

local function unescape(s)
   return (s:gsub("&(#?%w+);", function(e) return entities[e] or "&" .. e .. ";" end))
end

-- The attributes of the start tag TAG (its text) as a table.
local function attributes(tag)
   local a = {}
   for k, v in tag:gmatch('([%w%-]+)="([^"]*)"') do a[k] = unescape(v) end
   return a
end

-- The text of the element with id ID (no markup inside it).
local function text_of(html, id)
   return unescape(assert(html:match('id="' .. id .. '"[^>]*>([^<]*)<'), id))
end

-- The flame graph's frames: {name, bytes, depth, path, x, width}.
local function flame(html)
   local svg = assert(html:match('<div id="flame">(<svg.-</svg>)</div>'), "no flame graph")
   local frames = {}
   for g, rect in svg:gmatch('(<g class="frame"[^>]*>)<title>.-</title>(<rect[^>]*>)') do
      local ga, ra = attributes(g), attributes(rect)
      frames[#frames + 1] = {name = ga["data-name"], bytes = tonumber(ga["data-bytes"]),
                             depth = tonumber(ga["data-depth"]), path = ga["data-path"], x = tonumber(ra.x),
                             width = tonumber(ra.width)}
   end
   return frames, attributes(svg:match("^<svg[^>]*>"))
end

local function frame_named(frames, name, depth)
   for _, f in ipairs(frames) do
      if f.name == name and (not depth or f.depth == depth) then return f end
   end
end

-- The rows of the records' table: {id, kind, blocks, bytes, pid, test, lua, top}.
local function rows(html)
   local body = assert(html:match('<table id="records">.-<tbody>(.-)</tbody>'))
   local out = {}
   for tr in body:gmatch('<tr class="rec[^"]*"[^>]*>(.-)</tr>') do
      local cells = {}
      for cls, v in tr:gmatch('<td class="([^"]*)">(.-)</td>') do
         cells[cls:match("^num (%S+)") or cls:match("^(%S+)")] = unescape(v)
      end
      out[#out + 1] = {id = tonumber(cells.id), kind = cells.kind:match("^(%a+)"), blocks = tonumber(cells.blocks),
                       bytes = tonumber(cells.bytes), pid = tonumber(cells.pid), test = cells.test, lua = cells.lua,
                       top = cells.top}
   end
   return out
end

-- A report of CMD written as JSON and HTML into DIR: the decoded JSON and the page's path.
local function report(dir, cmd, extra)
   local html = dir .. "/r.html"
   local args = {"--html=" .. html}
   for _, a in ipairs(extra or {}) do args[#args + 1] = a end
   local r, code, err = h.ljleak_run(cmd, args)
   assert.is_truthy(r, err)
   return r, html, code
end

local function unsuppressed(r, kinds)
   local out = {}
   for _, rec in ipairs(r.leaks) do
      if (rec.suppressed_by == nil or rec.suppressed_by == cjson.null) and kinds[rec.kind] then out[#out + 1] = rec end
   end
   return out
end

local LEAKS = {definite = true, indirect = true, possible = true}

describe("the HTML report in Chromium", function()
   if not CHROMIUM then
      return pending("needs chromium, which could not be installed: apt-get install chromium (.ci/deps.sh tries)")
   end
   local dir
   setup(function() dir = h.tmpdir() end)
   teardown(function() h.rmtree(dir) end)

   describe("of examples/app.lua", function()
      local r, page, html
      setup(function()
         r, page = report(dir, {"luajit", "examples/app.lua"})
         html = dom(page)
      end)

      it("shows the verdict, the summary, the heap, the processes and the suppressions of the JSON", function()
         local v = attributes(html:match('<div id="verdict"[^>]*>'))
         assert.are.equal(tostring(r.verdict.exit_code), v["data-exit-code"])
         assert.are.equal(42, r.verdict.exit_code)
         assert.matches('<span class="why">' .. r.verdict.why:gsub("%p", "%%%0") .. "</span>", html)
         for _, k in ipairs({"definite", "indirect", "possible", "reachable", "suppressed"}) do
            local blocks, bytes = html:match('<tr data%-kind="' .. k .. '"><td[^>]*>%a+</td><td class="num blocks">'
                                             .. '(%d+)</td><td class="num bytes">(%d+)</td>')
            assert.are.same({r.summary[k].blocks, r.summary[k].bytes}, {tonumber(blocks), tonumber(bytes)}, k)
         end
         assert.are.same({blocks = 10, bytes = 300}, r.summary.definite)
         for _, field in ipairs({"in_use.bytes", "in_use.blocks", "allocs", "frees", "allocated"}) do
            local want = field:find("in_use", 1, true) and r.heap.in_use[field:match("%.(%a+)$")] or r.heap[field]
            assert.are.equal(tostring(want), html:match('data%-field="' .. field:gsub("%p", "%%%0") .. '">(%d+)<'))
         end
         local errors = attributes(html:match('<td id="errors%-total"[^>]*>'))
         assert.are.same({"0", "0"}, {errors["data-records"], errors["data-count"]})
         local p = r.processes[1]
         assert.matches(('<tr data%%-pid="%d"><td class="num">%d</td><td class="cmd">luajit examples/app%%.lua</td>')
                        :format(p.pid, p.pid), html)
         for _, u in ipairs(r.suppressions) do
            assert.matches(("<tr><td class=\"num\">%d</td><td class=\"num\">%d</td><td>%s</td>"):format(u.records,
               u.bytes, u.name:gsub("%p", "%%%0")), html)
         end
      end)

      it("lists the records of the JSON in its order, with their Lua line and top C frame", function()
         local want = unsuppressed(r, LEAKS)
         local got = rows(html)
         assert.are.equal(2, #want)
         assert.are.equal(#want, #got)
         for i, rec in ipairs(want) do
            assert.are.same({rec.id, rec.kind, rec.blocks, rec.bytes, rec.pid},
                            {got[i].id, got[i].kind, got[i].blocks, got[i].bytes, got[i].pid})
         end
         assert.are.same({"examples/app.lua:25 (scratch)", "malloc"}, {got[1].lua, got[1].top})
         assert.are.same({"examples/app.lua:20 (count_words)", "strndup (strndup.c:43)"}, {got[2].lua, got[2].top})
         local shown = attributes(html:match('<p id="shown"[^>]*>'))
         assert.are.same({"2", "2", "300"}, {shown["data-shown"], shown["data-matching"], shown["data-bytes"]})
         assert.are.equal("Showing 2 of 2 records (300 bytes in 10 blocks)", text_of(html, "shown"))
      end)

      it("draws the flame graph from the allocation function up through the Lua frames, widths as bytes", function()
         local frames, svg = flame(html)
         assert.are.equal("300", svg["data-total"])
         local root = assert(frame_named(frames, "all", 0))
         assert.are.same({300, 0}, {root.bytes, root.x})
         local width = root.width
         assert.are.equal(tonumber(svg.width), width)
         -- each frame: depth, bytes, and x as the bytes of the frames to its left
         local want = {
            {"malloc", 1, 300, 0},
            {"scratch (examples/app.lua:25)", 2, 256, 0}, {"main chunk (examples/app.lua:34)", 3, 256, 0},
            {"strndup (strndup.c:43)", 2, 44, 256}, {"words_split (libwords.c:20)", 3, 44, 256},
            {"count_words (examples/app.lua:20)", 4, 44, 256}, {"main chunk (examples/app.lua:32)", 5, 44, 256},
         }
         assert.are.equal(#want + 1, #frames)
         for _, w in ipairs(want) do
            local f = assert(frame_named(frames, w[1], w[2]), w[1])
            assert.are.equal(w[3], f.bytes, w[1])
            assert.is_true(math.abs(f.width - width * w[3] / 300) <= 0.01, ("%s: width %g"):format(w[1], f.width))
            assert.is_true(math.abs(f.x - width * w[4] / 300) <= 0.01, ("%s: x %g"):format(w[1], f.x))
         end
      end)

      it("filters, sorts and zooms as its address says", function()
         local filtered = dom(page, "filter=words_split")
         local got = rows(filtered)
         assert.are.same({{2, 44}}, {{got[1].id, got[1].bytes}})
         assert.are.equal(1, #got)
         local frames = flame(filtered)
         assert.are.equal(44, frame_named(frames, "all", 0).bytes)
         assert.is_nil(frame_named(frames, "scratch (examples/app.lua:25)"))
         assert.are.equal("Showing 1 of 1 record (44 bytes in 9 blocks), of 2 in all", text_of(filtered, "shown"))
         -- smallest first
         got = rows(dom(page, "sort=bytes"))
         assert.are.same({2, 1}, {got[1].id, got[2].id})
         -- zoomed on strndup's frame: it and the frames below it take the whole width
         local strndup = frame_named(flame(html), "strndup (strndup.c:43)", 2)
         local zoomed, svg = flame(dom(page, "zoom=" .. strndup.path))
         assert.are.equal("44", svg["data-zoomed"])
         local width = frame_named(zoomed, "all", 0).width
         for _, name in ipairs({"malloc", "strndup (strndup.c:43)", "words_split (libwords.c:20)",
                                "count_words (examples/app.lua:20)", "main chunk (examples/app.lua:32)"}) do
            assert.are.equal(width, assert(frame_named(zoomed, name), name).width)
         end
         assert.is_nil(frame_named(zoomed, "scratch (examples/app.lua:25)"))
      end)

      it("is a page Chromium draws: a screenshot of it", function()
         local png = dir .. "/app.png"
         chromium(page, nil, {"--window-size=1280,1600", "--screenshot=" .. png})
         local data = assert(h.read_file(png))
         assert.are.equal("\137PNG\r\n\26\n", data:sub(1, 8))
         local w = data:byte(17) * 2^24 + data:byte(18) * 2^16 + data:byte(19) * 2^8 + data:byte(20)
         local ht = data:byte(21) * 2^24 + data:byte(22) * 2^16 + data:byte(23) * 2^8 + data:byte(24)
         assert.are.same({1280, 1600}, {w, ht})
         assert.is_true(#data > 30000, "a page with tables and a flame graph, not a blank one: " .. #data)
      end)
   end)

   it("lists the kinds the text lists, the indirect records with their owner, a --fail-on kind too", function()
      local _, page = report(dir, {"luajit", "t/leak/order.lua"})
      local got = rows(dom(page))
      local kinds = {}
      for i, row in ipairs(got) do kinds[i] = row.kind .. " " .. row.bytes end
      assert.are.same({"definite 32", "indirect 48", "definite 16", "possible 64"}, kinds)
      assert.matches('<td class="kind k%-indirect">indirect <span class="owner">held by 1</span></td>', dom(page))
      local r
      r, page = report(dir, {"luajit", "t/leak/order.lua"}, {"--fail-on=definite,reachable"})
      got = rows(dom(page))
      assert.are.equal(#unsuppressed(r, {definite = true, indirect = true, possible = true, reachable = true}), #got)
      assert.are.same({"reachable", 555}, {got[5].kind, got[5].bytes})
   end)

   it("shows any name as text, never as markup", function()
      local prog = dir .. "/tagged.lua"
      h.write_file(prog, 'local ljleak = require "ljleak"\nlocal ffi = require "ffi"\n'
         .. 'ffi.cdef "void *malloc(size_t);"\nljleak.tag("</script><b>bold</b> & \\"quoted\\"")\nffi.C.malloc(77)\n')
      local _, page = report(dir, {"luajit", prog})
      local html = dom(page)
      local got = rows(html)
      assert.are.equal(1, #got)
      assert.are.equal('</script><b>bold</b> & "quoted"', got[1].test)
      assert.is_nil(html:find("<b>bold</b>", 1, true))
   end)

   it("shows `ljleak report`'s own verdict for a report that has none (an older file)", function()
      local r = report(dir, {"luajit", "examples/app.lua"})
      r.verdict = nil
      h.write_file(dir .. "/old.json", cjson.encode(r))
      local code, _, err = h.run({h.BIN, "report", dir .. "/old.json", "--html=" .. dir .. "/old.html"})
      assert.are.equal(42, code, err)
      local html = dom(dir .. "/old.html")
      assert.matches('<div id="verdict" class="verdict failed" data-exit-code="42">', html, 1, true)
      assert.matches("2 records of a --fail-on kind (definite): 300 bytes in 10 blocks (--error-exitcode)", html, 1,
                     true)
      assert.are.equal(2, #rows(html))
   end)

   it("says when a report does not have its verdict (one written by the Lua API)", function()
      local r = report(dir, {"luajit", "examples/app.lua"})
      r.verdict = nil
      local page = dir .. "/api.html"
      assert(require("ljleak.format").write(r, page, "html"))
      local html = dom(page)
      assert.matches('<div id="verdict" class="verdict unknown">', html, 1, true)
   end)

   it("stays usable with 10,000 records: a page of rows, the frames at least a pixel wide", function()
      local N = 10000
      local r, page = report(dir, {h.ROOT .. "/build/t/leak/stacks", tostring(N)})
      assert.are.equal(N, #r.leaks)
      local html = dom(page)
      assert.are.equal(100, #rows(html))
      local shown = attributes(html:match('<p id="shown"[^>]*>'))
      assert.are.same({"100", tostring(N), tostring(r.summary.definite.bytes)},
                      {shown["data-shown"], shown["data-matching"], shown["data-bytes"]})
      local frames, svg = flame(html)
      assert.are.equal(tostring(r.summary.definite.bytes), svg["data-total"])
      assert.is_true(#frames < 5000, #frames)
      for _, f in ipairs(frames) do assert.is_true(f.width >= 1, f.name) end
      -- the biggest first when sorted by bytes, from the address
      local got = rows(dom(page, "sort=bytes&desc=1"))
      assert.are.equal(1024, got[1].bytes)
      assert.are.equal(100, #got)
   end)
end)
