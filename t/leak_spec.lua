-- The tracker end to end: each fixture in t/leak/ under `ljleak run`, with the exact blocks,
-- bytes, kinds and leaking function the report must give.
local h = require "t.helper"

local one, only_definite = h.one, h.only_definite

describe("tracker", function()
  it("finds a block from ffi.C.malloc dropped by Lua code", function()
    local r, code = h.fixture("malloc_dropped")
    assert.are.equal(42, code)
    only_definite(r, 1, 100)
    local rec = one(r, "definite")
    assert.are.equal(100, rec.bytes)
    assert.are.equal("malloc", rec.frames[1]["function"])
    assert.are.equal("tracker", r.engine)
    assert.are.same({"luajit", "t/leak/malloc_dropped.lua"}, r.command)
  end)

  it("finds a leak inside a C library loaded with ffi.load, with file and line", function()
    local r, code = h.fixture("ffi_load")
    assert.are.equal(42, code)
    only_definite(r, 1, 123)
    local rec = one(r, "definite", "leak_malloc")
    local f
    for _, fr in ipairs(rec.frames) do if fr["function"] == "leak_malloc" then f = fr end end
    assert.matches("libleaky%.c$", f.file)
    assert.are.equal(17, f.line)
    assert.matches("libleaky%.so$", f.object)
  end)

  it("finds strdup's copy", function()
    local r = h.fixture("strdup")
    only_definite(r, 1, 12)
    local rec = one(r, "definite", "leak_strdup")
    assert.is_true(h.has_function(rec, "strdup"))
  end)

  it("finds a calloc block", function()
    local r = h.fixture("calloc")
    only_definite(r, 1, 120)
    assert.are.equal("calloc", one(r, "definite", "leak_calloc").frames[1]["function"])
  end)

  it("attributes a grown block to realloc, with its final size", function()
    local r = h.fixture("realloc_grown")
    only_definite(r, 1, 4000)
    assert.are.equal("realloc", one(r, "definite", "leak_realloc_grown").frames[1]["function"])
  end)

  it("finds posix_memalign and aligned_alloc blocks", function()
    local r = h.fixture("aligned")
    only_definite(r, 2, 712)
    local seen = {}
    for _, rec in ipairs(h.records(r, "definite", "leak_aligned")) do
      seen[rec.frames[1]["function"]] = rec.bytes
    end
    assert.are.same({posix_memalign = 200, aligned_alloc = 512}, seen)
  end)

  it("finds a block above the mmap threshold", function()
    local r = h.fixture("big_block")
    only_definite(r, 1, 4 * 1024 * 1024)
    one(r, "definite", "leak_big")
  end)

  it("counts every block of a JIT-hot loop exactly", function()
    local r, code = h.fixture("jit_loop")
    assert.are.equal(42, code)
    only_definite(r, 2000, 48000)
    for _, rec in ipairs(h.records(r, "definite")) do
      assert.are.equal("malloc", rec.frames[1]["function"])
    end
  end)

  it("finds a leak in a thread started by C code", function()
    local r = h.fixture("thread")
    only_definite(r, 1, 321)
    one(r, "definite", "leaky_thread_main")
  end)

  it("counts exactly while several threads allocate and free at once", function()
    local r = h.fixture("threads_stress")
    -- every 10th of 4 x 20000 blocks of 40 + (i % 7) bytes
    only_definite(r, 8000, 344004)
    assert.are.equal(8000, (h.total(r, "definite", "stress_main")))
  end)

  it("calls a block held by a C global reachable, and does not fail", function()
    local r, code = h.fixture("global_reachable")
    assert.are.equal(0, code)
    only_definite(r, 0, 0)
    assert.are.equal(555, one(r, "reachable", "hold_in_global").bytes)
  end)

  it("judges a library unloaded before exit as if it were loaded (real dlclose)", function()
    local env = {env = {LJLEAK_KEEP_MODULES = "0"}}
    local r, code = h.fixture("global_reachable", nil, env)
    assert.are.equal(0, code)
    only_definite(r, 0, 0)
    assert.are.equal(555, one(r, "reachable", "hold_in_global").bytes)  -- its global still a root
    local r2 = h.fixture("ffi_load", nil, env)
    only_definite(r2, 1, 123)
    one(r2, "definite", "leak_malloc")                                  -- its frames still named
  end)

  it("calls a block known only by an interior pointer possibly lost", function()
    local r, code = h.fixture("interior")
    assert.are.equal(0, code)
    only_definite(r, 0, 0)
    assert.are.equal(64, one(r, "possible", "leak_interior").bytes)
    assert.are.same({blocks = 1, bytes = 64}, r.summary.possible)
  end)

  it("splits A->B with A dropped into definite and indirect", function()
    local r = h.fixture("chain")
    only_definite(r, 1, 32)
    assert.are.equal(32, one(r, "definite", "leak_chain").bytes)
    assert.are.equal(48, one(r, "indirect", "leak_chain").bytes)
    assert.are.same({blocks = 1, bytes = 48}, r.summary.indirect)
  end)

  it("finds a dropped two-block cycle", function()
    local r = h.fixture("cycle")
    only_definite(r, 1, 32)
    assert.are.same({blocks = 1, bytes = 32}, r.summary.indirect)
    one(r, "indirect", "leak_cycle")
  end)

  it("is clean on blocks owned by ffi.gc finalizers", function()
    local r, code = h.fixture("ffi_gc")
    assert.are.equal(0, code)
    for _, kind in ipairs {"definite", "indirect", "possible", "reachable"} do
      assert.are.equal(0, #h.records(r, kind, "make_buffer"), kind)
    end
    only_definite(r, 0, 0)
  end)

  it("calls a pointer kept in a Lua-table cdata reachable at os.exit(0)", function()
    local r, code = h.fixture("cdata_os_exit")
    assert.are.equal(0, code)
    only_definite(r, 0, 0)
    assert.is_truthy(h.record_of_size(r, "reachable", 77, "malloc"))
    assert.are.equal("open", r.processes[1].lua_state)
  end)

  it("calls a block lost when its only pointer is a stale copy in LuaJIT's freed memory", function()
    local r, code = h.fixture("stale_cdata_os_exit")
    assert.are.equal(42, code)
    only_definite(r, 1, 99)     -- the copy left in freed memory is no root
    assert.are.equal(9, h.record_of_size(r, "reachable", 77).lua[1].line)  -- the one a live cdata holds
  end)

  it("calls the same pointer definite when the state was closed", function()
    local r, code = h.fixture("cdata_closed")
    assert.are.equal(42, code)
    only_definite(r, 1, 77)
    assert.are.equal("closed", r.processes[1].lua_state)
  end)

  it("reports a forked child's leak under the child's pid", function()
    local r, code = h.fixture("fork_child")
    assert.are.equal(42, code)
    only_definite(r, 1, 222)
    local rec = one(r, "definite", "leak_in_child")
    local pids = {}
    for _, rec2 in ipairs(r.leaks) do pids[rec2.pid] = true end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.are.equal(2, n)  -- parent and child each reported their own blocks
    assert.is_number(rec.pid)
  end)

  it("covers every luajit started by a shell script", function()
    local r, code = h.ljleak_run({"sh", "t/leak/several.sh"})
    assert.are.equal(42, code)
    only_definite(r, 2, 300)
    local pids = {}
    for _, rec in ipairs(h.records(r, "definite")) do pids[#pids + 1] = rec.pid end
    assert.are.equal(2, #pids)
    assert.are_not.equal(pids[1], pids[2])
  end)
end)

describe("report files", function()
  it("writes JUnit XML, HTML and folded stacks beside the JSON, and never over a user's file", function()
    local dir = h.tmpdir()
    local _, code = h.fixture("chain", {"--junit=" .. dir .. "/r.xml", "--html=" .. dir .. "/r.html",
                                        "--folded=" .. dir .. "/r.folded"})
    assert.are.equal(42, code)
    local xml = h.read_file(dir .. "/r.xml")
    assert.matches('<testsuite name="ljleak" tests="1" failures="1" errors="0">', xml, 1, true)
    assert.matches('name="definite: 32 bytes in 1 block at t/leak/chain.lua:3"', xml, 1, true)
    local html = h.read_file(dir .. "/r.html")
    assert.matches('<h3 class="definite">definite: 32 bytes in 1 block</h3>', html, 1, true)
    local folded = {}
    for line in h.read_file(dir .. "/r.folded"):gmatch("[^\n]+") do folded[#folded + 1] = line end
    assert.are.equal(2, #folded)
    assert.matches("^definite;main;.*;t/leak/chain%.lua:3;leak_chain %(libleaky%.c:%d+%);malloc 32$", folded[1])
    assert.matches("^indirect;.*;leak_chain %(libleaky%.c:%d+%);malloc 48$", folded[2])
    -- an earlier report of the same kind is replaced; a file the user wrote is not
    local code2 = select(2, h.fixture("chain", {"--junit=" .. dir .. "/r.xml"}))
    assert.are.equal(42, code2)
    h.write_file(dir .. "/mine.xml", "<notes/>\n")
    local code3, _, err = h.run({h.BIN, "run", "--junit=" .. dir .. "/mine.xml", "--", "true"})
    assert.are.equal(2, code3)
    assert.matches("not overwriting it", err, 1, true)
    assert.are.equal("<notes/>\n", h.read_file(dir .. "/mine.xml"))
    h.rmtree(dir)
  end)
end)

describe("processes", function()
  it("waits for a process that outlives the command, and reports its leak", function()
    local r, code = h.ljleak_run({"sh", "t/leak/outlive.sh"})
    assert.are.equal(42, code)
    only_definite(r, 1, 321)
  end)
end)

describe("exit status", function()
  it("passes the command's status through when nothing leaked", function()
    local r, code = h.ljleak_run({"luajit", "-e", "os.exit(3)"})
    assert.are.equal(3, code)
    assert.are.equal(3, r.exit_status)
  end)

  it("is 128+signal when the command was killed", function()
    local r, code = h.ljleak_run({"luajit", "-e",
      "local ffi = require 'ffi' ffi.cdef 'int kill(int, int); int getpid(void);' " ..
      "ffi.C.kill(ffi.C.getpid(), 15)"})
    assert.are.equal(143, code)
    assert.is_truthy(r)
  end)

  it("is --error-exitcode when a leak was found", function()
    local _, code = h.fixture("ffi_load", {"--error-exitcode=7"})
    assert.are.equal(7, code)
  end)

  it("fails on the kinds named by --fail-on", function()
    local _, code = h.fixture("interior", {"--fail-on=definite,possible"})
    assert.are.equal(42, code)
  end)
end)

describe("clean programs", function()
  it("luajit -e 'require\"ffi\"' gives no record at all", function()
    local r, code = h.ljleak_run({"luajit", "-e", "require 'ffi'"})
    assert.are.equal(0, code)
    assert.are.same({}, r.leaks)
  end)

  it("a trivial busted spec gives no leak", function()
    local r, code = h.ljleak_run({"luajit", "/usr/bin/busted", "t/fixture/trivial_spec.lua"})
    assert.are.equal(0, code)
    for _, kind in ipairs {"definite", "indirect", "possible"} do
      assert.are.same({blocks = 0, bytes = 0}, r.summary[kind], kind)
    end
  end)
end)
