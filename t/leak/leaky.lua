-- Loads the deliberately leaky C library (build/t/leak/libleaky.so) for the leak fixtures.
local ffi = require "ffi"

ffi.cdef [[
void leak_malloc(size_t n);
void leak_strdup(const char *s);
void leak_calloc(size_t n, size_t sz);
void leak_realloc_grown(void);
void leak_aligned(void);
void leak_big(void);
int leak_in_thread(size_t n);
int leak_from_threads(int nthreads, int per, int keep, size_t size);
int churn_start(void);
int churn_stop_and_join(void);
void hold_in_global(size_t n);
void hold_first_word_chain(int n);
void leak_interior(size_t n);
void leak_chain(void);
void leak_cycle(void);
int leak_in_child(size_t n);
int exit_while_threads_start(int children, int n);
void *make_buffer(size_t n);
void free_buffer(void *p);
void *malloc(size_t n);
void free(void *p);
]]

local root = (arg and arg[0] or ""):match("^(.-)t/leak/[^/]+$") or ""
return ffi.load(os.getenv("LJLEAK_LEAKY_LIB") or (root .. "build/t/leak/libleaky.so"))
