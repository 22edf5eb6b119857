-- Growth: series of live blocks and bytes per iteration (a site's, or the process's memory) judged
-- growing or not. A least-squares slope over the iterations after warmup, its fit (R^2), and a check
-- that the growth is persistent: each quarter of the window holds more than the one before, and
-- the last quarter's smallest value is above the first quarter's largest. A set that returns to
-- the same size, or grows once (a table resized, a pool filled) and stays, is not growing.
-- Loaded by the Lua API in the program under test and by `ljleak soak`: no other module needed.
local M = {}

-- Least squares of ys[first..last] against the iteration number: slope, intercept, R^2 (1 when
-- the series is flat: a perfect fit of a line that does not grow).
function M.fit(ys, first, last)
   local n = last - first + 1
   if n < 2 then return 0, ys[last] or 0, 1 end
   local sx, sy, sxx, sxy = 0, 0, 0, 0
   for i = first, last do
      local y = ys[i]
      sx, sy, sxx, sxy = sx + i, sy + y, sxx + i * i, sxy + i * y
   end
   local den = n * sxx - sx * sx
   local slope = (n * sxy - sx * sy) / den
   local icpt = (sy - slope * sx) / n
   local ss_tot, ss_res, mean = 0, 0, sy / n
   for i = first, last do
      local y = ys[i]
      local e = y - (icpt + slope * i)
      ss_tot, ss_res = ss_tot + (y - mean) ^ 2, ss_res + e * e
   end
   return slope, icpt, ss_tot > 0 and 1 - ss_res / ss_tot or 1
end

-- Does ys[first..last] grow all along (the persistence check above)?
function M.persistent(ys, first, last)
   local n = last - first + 1
   if n < 8 then return false end
   local q = math.floor(n / 4)
   local prev_mean, first_max
   for k = 0, 3 do
      local lo, hi = first + k * q, k == 3 and last or first + (k + 1) * q - 1
      local sum, mn, mx = 0, math.huge, -math.huge
      for i = lo, hi do
         local y = ys[i]
         sum, mn, mx = sum + y, math.min(mn, y), math.max(mx, y)
      end
      local mean = sum / (hi - lo + 1)
      if prev_mean and mean <= prev_mean then return false end
      prev_mean = mean
      if k == 0 then first_max = mx end
      if k == 3 and mn <= first_max then return false end
   end
   return true
end

M.MIN_FIT = 0.5   -- R^2 below this: not a line, whatever its slope

-- The growth of one series of live BLOCKS and BYTES (indexed by iteration) after WARMUP: nil when
-- it does not grow, else {blocks_per_iteration, bytes_per_iteration, fit}.
function M.judge(blocks, bytes, warmup)
   local last = #bytes
   local first = warmup + 1
   if last - first + 1 < 8 then return nil end
   local bslope, _, bfit = M.fit(bytes, first, last)
   if bslope <= 0 or bfit < M.MIN_FIT or not M.persistent(bytes, first, last) then return nil end
   local kslope = M.fit(blocks, first, last)
   return {blocks_per_iteration = kslope, bytes_per_iteration = bslope, fit = bfit}
end

-- -- Memory kept by the allocator -------------------------------------------------------------------

local MiB = 1024 * 1024
M.RSS_MIN_GROWTH = 4 * MiB   -- RSS growing by less over the window is noise, not retention

local function mib(n)
   if math.abs(n) < 10240 then return ("%d bytes"):format(n) end
   if math.abs(n) < MiB then return ("%.1f KiB"):format(n / 1024) end
   return ("%.1f MiB"):format(n / MiB)
end

-- Memory figures per iteration (MEM: rss, live, arena, hblkhd, uordblks, fordblks, each a list
-- indexed by iteration; live: tracked live bytes) judged after WARMUP: nil when RSS does not grow,
-- else {verdict = "leak" | "allocator", rss_per_iteration, live_per_iteration, message}.
-- "allocator": RSS grows while live bytes do not; the message says so and what to try.
function M.memory(mem, warmup, growing)
   local rss, live = mem.rss, mem.live
   local first, last = warmup + 1, #rss
   if last - first + 1 < 8 then return nil end
   local rslope = M.fit(rss, first, last)
   local rgrowth = rss[last] - rss[first]
   if rslope <= 0 or rgrowth < M.RSS_MIN_GROWTH or not M.persistent(rss, first, last) then return nil end
   local lslope = M.fit(live, first, last)
   local out = {rss_per_iteration = rslope, live_per_iteration = lslope, rss_growth = rgrowth,
                live_growth = live[last] - live[first]}
   if growing or lslope > rslope / 4 then
      out.verdict = "leak"
      out.message = ("RSS grew by %s over %d iterations, with live tracked bytes growing by %s: see the growing sites.")
         :format(mib(rgrowth), last - first, mib(out.live_growth))
      return out
   end
   out.verdict = "allocator"
   local figures = ("arena %s, mmapped %s, in use %s, free in the arena %s")
      :format(mib(mem.arena[last]), mib(mem.hblkhd[last]), mib(mem.uordblks[last]), mib(mem.fordblks[last]))
   out.message = ("RSS grew by %s over %d iterations while live tracked bytes stayed at %s (%+d): "
      .. "not a leak, memory kept by the allocator (%s). To try: malloc_trim(0) after the work, "
      .. "mallopt(M_MMAP_THRESHOLD, ...) so that big blocks are mmapped and given back, "
      .. "M_ARENA_MAX (MALLOC_ARENA_MAX=2) with threads, and for Lua objects LuaJIT's own arena "
      .. "(collectgarbage(\"count\")).")
      :format(mib(rgrowth), last - first, mib(live[last]), out.live_growth, figures)
   return out
end

return M
