-- Constants shared with the C side: csrc/lk_def.h declares the same ones, and t/const_spec.lua
-- checks that the two agree. Leak kinds, allocation functions, stack depths, LJLEAK_* names.
local M = {}

-- Leak kinds, in the order reports list them (Valgrind's meanings).
M.KINDS = {"definite", "indirect", "possible", "reachable"}

-- The allocation functions a site records (the first frame of every tracker record).
M.ALLOC_FNS = {"malloc", "calloc", "realloc", "reallocarray", "memalign", "posix_memalign", "aligned_alloc",
               "valloc", "pvalloc"}

M.DEPTH_DEFAULT, M.DEPTH_MAX = 16, 64           -- C frames kept per stack (LJLEAK_DEPTH)
M.LUA_DEPTH_DEFAULT, M.LUA_DEPTH_MAX = 6, 16    -- Lua frames kept (LJLEAK_LUA_DEPTH)

-- Environment variables: those the tracker reads (C's LK_ENV_*), then those of the Lua side.
M.ENV = {
   DIR = "LJLEAK_DIR", DEPTH = "LJLEAK_DEPTH", LUA = "LJLEAK_LUA", MAX_SITES = "LJLEAK_MAX_SITES",
   KEEP_MODULES = "LJLEAK_KEEP_MODULES", EXPLAIN = "LJLEAK_EXPLAIN", LUA_BOOT = "LJLEAK_LUA_BOOT",
   LUA_DEPTH = "LJLEAK_LUA_DEPTH", REGISTRY = "LJLEAK_REGISTRY", PER_TEST = "LJLEAK_PER_TEST",
   FAIL_ON = "LJLEAK_FAIL_ON", PRELOAD = "LJLEAK_PRELOAD", VALGRIND = "LJLEAK_VALGRIND", VG_ID = "LJLEAK_VG_ID",
   BUSTED = "LJLEAK_BUSTED", BIN = "LJLEAK_BIN", REEXEC = "LJLEAK_REEXEC", SUPPRESSIONS_DIR = "LJLEAK_SUPPRESSIONS_DIR",
   CACHE = "LJLEAK_CACHE", UNWIND = "LJLEAK_UNWIND", LUA_WALK = "LJLEAK_LUA_WALK",
   SOAK = "LJLEAK_SOAK",
}

-- The run directory's file (under LJLEAK_DIR) where a test runner's integration in the program lists
-- the tests it ran, one JSON object a line (lua/ljleak/busted.lua writes it, ljleak.engine reads it).
M.TESTS_FILE = "tests.%d.jsonl"

return M
