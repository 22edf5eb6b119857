-- The C parts' dependency graphs, as the linker sees them: part A uses part B when A's object
-- has an undefined symbol that B's object defines (read with `nm -P`). Used by t/dag_spec.lua.
local h = require "t.helper"

local M = {}

-- Symbols of the object at PATH: defined (global), undefined. Fails when nm fails.
local function symbols(path)
   local code, out, err = h.run({"nm", "-P", path})
   assert(code == 0, ("nm %s: %s"):format(path, err or ""))
   local defined, undefined = {}, {}
   for name, kind in out:gmatch("\n?([^%s]+) (%a) [^\n]*") do
      if kind == "U" then
         undefined[#undefined + 1] = name
      elseif kind:match("%u") then
         defined[name] = true
      end
   end
   return defined, undefined
end

-- The graph of OBJECTS ({name = path}): edges[a][b] = the first symbol by which a uses b.
function M.graph(objects)
   local owner, edges, undefined = {}, {}, {}
   for name, path in pairs(objects) do
      local def, undef = symbols(path)
      for sym in pairs(def) do owner[sym] = name end
      undefined[name] = undef
      edges[name] = {}
   end
   for name, undef in pairs(undefined) do
      for _, sym in ipairs(undef) do
         local other = owner[sym]
         if other and other ~= name and not edges[name][other] then edges[name][other] = sym end
      end
   end
   return edges
end

-- A cycle of EDGES as text ("a -(sym)-> b -(sym)-> a"), or nil when the graph is a DAG.
function M.cycle(edges)
   local state, stack = {}, {}
   local found
   local names = {}
   for name in pairs(edges) do names[#names + 1] = name end
   table.sort(names)
   local function visit(n)
      state[n] = "open"
      stack[#stack + 1] = n
      local outs = {}
      for m in pairs(edges[n] or {}) do outs[#outs + 1] = m end
      table.sort(outs)
      for _, m in ipairs(outs) do
         if state[m] == "open" then
            local parts, from = {}, nil
            for i = #stack, 1, -1 do
               if stack[i] == m then from = i break end
            end
            for i = from, #stack do
               local nxt = stack[i + 1] or m
               parts[#parts + 1] = ("%s -(%s)-> "):format(stack[i], edges[stack[i]][nxt])
            end
            found = table.concat(parts) .. m
            return true
         elseif not state[m] and visit(m) then
            return true
         end
      end
      stack[#stack] = nil
      state[n] = "done"
      return false
   end
   for _, n in ipairs(names) do
      if not state[n] and visit(n) then return found end
   end
   return nil
end

-- The first use against ORDER (a list of names, lowest first): "a uses b (sym), listed after it".
function M.against_order(edges, order)
   local rank = {}
   for i, n in ipairs(order) do rank[n] = i end
   for _, a in ipairs(order) do
      for b, sym in pairs(edges[a] or {}) do
         if rank[b] and rank[b] > rank[a] then
            return ("%s uses %s (%s), which is listed after it"):format(a, b, sym)
         end
      end
   end
   return nil
end

-- The #include "..." graph of the files in DIR (names ending in .c or .h).
function M.includes(dir)
   local lfs = require "lfs"
   local edges = {}
   for name in lfs.dir(dir) do
      if name:match("%.[ch]$") then
         edges[name] = {}
         for inc in assert(h.read_file(dir .. "/" .. name)):gmatch('\n#include "([^"]+)"') do
            edges[name][inc] = "#include"
         end
      end
   end
   return edges
end

return M
