-- The C parts form a DAG: in each library (the tracker, the Valgrind library, the Lua C module),
-- no object uses a symbol of an object that uses it back (read from `nm`), each uses only the
-- parts listed before it in the Makefile, and the #include graph of csrc/ has no cycle.
local h = require "t.helper"
local dag = require "t.dag"

-- The parts of the Makefile variable NAME (lowest first) and their objects under build/obj/DIR.
local function parts(name, dir)
   local mk = assert(h.read_file(h.ROOT .. "/Makefile"))
   local text = assert(mk:match("\n" .. name .. "%s*=%s*(.-[^\\])\n"), name)
   local order, objects = {}, {}
   for p in text:gmatch("[%w_]+") do
      order[#order + 1] = p
      objects[p] = ("%s/build/obj/%s/%s.o"):format(h.ROOT, dir, p)
   end
   return order, objects
end

describe("the C parts", function()
   for _, lib in ipairs({{"TRACKER_PARTS", "tracker"}, {"VG_PARTS", "vg"}, {"CORE_PARTS", "core"}}) do
      it("of " .. lib[2] .. " use only the parts listed before them, with no cycle", function()
         local order, objects = parts(lib[1], lib[2])
         assert.is_true(#order >= 3)
         local edges = dag.graph(objects)
         assert.is_nil(dag.cycle(edges))
         assert.is_nil(dag.against_order(edges, order))
      end)
   end

   it("of the tracker are really linked to each other (the check sees their uses)", function()
      local _, objects = parts("TRACKER_PARTS", "tracker")
      local edges = dag.graph(objects)
      assert.are.equal("lk_table_epoch", edges.lk_alloc.lk_table)  -- (the first by name: the hot path's stamp)
      assert.are.equal("lk_hot_gen", edges.lk_alloc.lk_state)   -- (the first by name)
   end)

   it("include only headers, with no cycle", function()
      local edges = dag.includes(h.ROOT .. "/csrc")
      for file, incs in pairs(edges) do
         for inc in pairs(incs) do assert.matches("%.h$", inc, 1, false, file) end
      end
      assert.is_nil(dag.cycle(edges))
   end)

   it("each include their own header first; a part without one is used by none", function()
      local _, objects = parts("TRACKER_PARTS", "tracker")
      local edges = dag.graph(objects)
      for part in pairs(objects) do
         local src = assert(h.read_file(("%s/csrc/%s.c"):format(h.ROOT, part)))
         if h.read_file(("%s/csrc/%s.h"):format(h.ROOT, part)) then
            assert.are.equal(part .. ".h", src:match('\n#include "([^"]+)"'), part)
         else
            for user, uses in pairs(edges) do assert.is_nil(uses[part], user .. " uses " .. part) end
         end
      end
   end)
end)

describe("the DAG check", function()
   it("names a cycle between two objects, and a use against the order", function()
      local dir = h.tmpdir()
      h.write_file(dir .. "/a.c", "int b(void); int a(void) { return b(); }\n")
      h.write_file(dir .. "/b.c", "int a(void); int b(void) { return a(); }\n")
      h.write_file(dir .. "/c.c", "int a(void); int c(void) { return a(); }\n")
      local objects = {}
      for _, n in ipairs({"a", "b", "c"}) do
         assert.are.equal(0, (h.run({"cc", "-c", "-o", dir .. "/" .. n .. ".o", dir .. "/" .. n .. ".c"},
                                    {env = h.UNTRACED})))
         objects[n] = dir .. "/" .. n .. ".o"
      end
      local edges = dag.graph(objects)
      assert.are.equal("a -(b)-> b -(a)-> a", dag.cycle(edges))
      edges = dag.graph({a = objects.a, c = objects.c})
      assert.is_nil(dag.cycle(edges))
      assert.are.equal("a uses c (c), which is listed after it", dag.against_order({a = {c = "c"}}, {"a", "c"}))
      assert.are.equal("c uses a (a), which is listed after it", dag.against_order(edges, {"c", "a"}))
      assert.is_nil(dag.against_order(edges, {"a", "c"}))
      h.rmtree(dir)
   end)
end)
