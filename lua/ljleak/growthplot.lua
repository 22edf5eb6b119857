-- The HTML report's growth plot (`ljleak soak`): for each process, live tracked bytes and RSS per
-- iteration as an SVG drawn here (no script, no library), the growing sites' own live bytes
-- highlighted, the warmup shaded, and the allocator's verdict under it. The HTML formatter
-- (ljleak.format) calls M.html in one place.
local M = {}

local W, H = 720, 260          -- the plot area, in SVG units
local LEFT, TOP, BOTTOM = 70, 20, 30

local function human(n)
   if n >= 1024 * 1024 then return ("%.1f MiB"):format(n / (1024 * 1024)) end
   if n >= 1024 then return ("%.1f KiB"):format(n / 1024) end
   return ("%d B"):format(n)
end

-- The points of SERIES (values by iteration) scaled to the plot: "x,y x,y ...".
local function points(series, lo, hi)
   local out, n = {}, #series
   local span = hi > lo and hi - lo or 1
   for i = 1, n do
      local x = LEFT + (n > 1 and (i - 1) / (n - 1) or 0) * W
      local y = TOP + H - (series[i] - lo) / span * H
      out[#out + 1] = ("%.1f,%.1f"):format(x, y)
   end
   return table.concat(out, " ")
end

local function range(list)
   local lo, hi = math.huge, -math.huge
   for _, s in ipairs(list) do
      for _, v in ipairs(s) do lo, hi = math.min(lo, v), math.max(hi, v) end
   end
   if lo > hi then return 0, 1 end
   return lo, hi
end

-- One process's plot: an <svg> element. LIVE, RSS: series; SITES: growth records with `series`;
-- WARMUP: iterations shaded.
local function svg(xml, live, rss, sites, warmup)
   local out = {}
   local function put(s) out[#out + 1] = s end
   put(('<svg xmlns="http://www.w3.org/2000/svg" class="growth-plot" width="%d" height="%d" viewBox="0 0 %d %d">')
      :format(LEFT + W + 20, TOP + H + BOTTOM, LEFT + W + 20, TOP + H + BOTTOM))
   put(('<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="#ccc"/>'):format(LEFT, TOP, W, H))
   local n = #live
   if warmup > 0 and n > 1 then
      put(('<rect class="warmup" x="%d" y="%d" width="%.1f" height="%d" fill="#eee"><title>warmup: %d iterations'
         .. ' left out of the fit</title></rect>'):format(LEFT, TOP, warmup / (n - 1) * W, H, warmup))
   end
   -- live bytes and the sites on one scale (bytes tracked), RSS on its own (right-hand labels)
   local series = {live}
   for _, s in ipairs(sites) do series[#series + 1] = s.series end
   local lo, hi = range(series)
   local rlo, rhi = range({rss})
   put(('<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>'):format(LEFT - 4, TOP + 10, human(hi)))
   put(('<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>'):format(LEFT - 4, TOP + H, human(lo)))
   put(('<text x="%d" y="%d" font-size="11">1</text>'):format(LEFT, TOP + H + 14))
   put(('<text x="%d" y="%d" font-size="11" text-anchor="end">%d iterations</text>'):format(LEFT + W, TOP + H + 14, n))
   if #rss > 0 then
      put(('<polyline class="rss" fill="none" stroke="#999" stroke-dasharray="4 3" points="%s">'
         .. '<title>RSS, %s to %s</title></polyline>'):format(points(rss, rlo, rhi), human(rlo), human(rhi)))
   end
   put(('<polyline class="live" fill="none" stroke="#2a6fdb" stroke-width="1.5" points="%s">'
      .. '<title>live tracked bytes, %s to %s</title></polyline>'):format(points(live, lo, hi), human(live[1] or 0),
      human(live[n] or 0)))
   for _, s in ipairs(sites) do
      local where = s.lua and s.lua[1] and ("%s:%s"):format(s.lua[1].source or "?", tostring(s.lua[1].line)) or "?"
      put(('<polyline class="site" fill="none" stroke="#c00" stroke-width="2" points="%s"><title>%s: %.1f bytes '
         .. 'per iteration</title></polyline>'):format(points(s.series, lo, hi), xml(where), s.bytes_per_iteration))
   end
   put("</svg>")
   return table.concat(out)
end

-- The growth part of the HTML page for REPORT ("" when it has none); XML escapes text.
function M.html(report, xml)
   local soak = report.soak
   if type(soak) ~= "table" then return "" end
   local out = {("<h2>Growth: %s, %d iterations (%d warmup)</h2>\n"):format(xml(tostring(soak.target)),
      soak.iterations or 0, soak.warmup or 0)}
   local function put(s) out[#out + 1] = s end
   for _, p in ipairs(soak.processes or {}) do
      local mem = type(p.memory) == "table" and p.memory or {}
      local sites = {}
      for _, g in ipairs(report.growth or {}) do
         if g.pid == p.pid and type(g.series) == "table" then sites[#sites + 1] = g end
      end
      put(("<h3>pid %s: %s</h3>\n"):format(tostring(p.pid),
         #sites > 0 and ('<span class="definite">%d growing site%s</span>'):format(#sites, #sites == 1 and "" or "s")
         or "stable"))
      put('<p><span style="color:#2a6fdb">&#9473; live tracked bytes</span> <span style="color:#999">'
         .. '&#9476; RSS</span> <span style="color:#c00">&#9473; a growing site</span></p>\n')
      put(svg(xml, mem.live or {}, mem.rss or {}, sites, soak.warmup or 0))
      put("\n<ul>\n")
      for _, g in ipairs(sites) do
         local f = g.lua and g.lua[1]
         put(('<li class="definite">%.1f bytes, %.2f blocks per iteration (fit %.2f) at %s</li>\n'):format(
            g.bytes_per_iteration, g.blocks_per_iteration, g.fit or 0,
            xml(f and ("%s:%s"):format(f.source or "?", tostring(f.line)) or "?")))
      end
      put("</ul>\n")
      if type(p.allocator) == "table" and p.allocator.message then
         put(("<p>%s</p>\n"):format(xml(p.allocator.message)))
      end
   end
   return table.concat(out)
end

return M
