/* ljleak tracker: common definitions shared by every csrc/ file of the preloaded library.
** Declarations of each part live here so the parts stay small and one-concern. */
#ifndef LK_DEF_H
#define LK_DEF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lk_luaread.h"

#define LK_EXPORT __attribute__((visibility("default")))
#define LK_HIDDEN __attribute__((visibility("hidden")))
#define LK_USED __attribute__((used))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define LK_TLS __thread __attribute__((tls_model("initial-exec")))

/* A caller's callee-saved registers (rbx rbp r12 r13 r14 r15) and stack pointer (its frame, just
** above the return address), as it had them when it called into the tracker. */
#define LK_NREGS 6
typedef struct lk_regs {
  uintptr_t r[LK_NREGS];
  uintptr_t sp;
} lk_regs;

/* An exported entry point NAME that first stores its caller's registers and stack pointer in the
** thread-local lk_regs CTX, then jumps to BODY with the same arguments (r10, r11: scratch). */
#define LK_CAPTURING_ENTRY(name, ctx, body)                                  \
  __asm__(".text\n\t.globl " #name "\n\t.type " #name ",@function\n"        \
          #name ":\n\t"                                                      \
          "movq " #ctx "@gottpoff(%rip), %r11\n\t"                           \
          "movq %rbx, %fs:0(%r11)\n\t"                                       \
          "movq %rbp, %fs:8(%r11)\n\t"                                       \
          "movq %r12, %fs:16(%r11)\n\t"                                      \
          "movq %r13, %fs:24(%r11)\n\t"                                      \
          "movq %r14, %fs:32(%r11)\n\t"                                      \
          "movq %r15, %fs:40(%r11)\n\t"                                      \
          "leaq 8(%rsp), %r10\n\t"                                           \
          "movq %r10, %fs:48(%r11)\n\t"                                      \
          "jmp " #body "\n\t"                                                \
          ".size " #name ", .-" #name "\n\t"                                  \
          ".previous");

/* Allocation functions, as recorded in a site. */
enum {
  LK_F_MALLOC, LK_F_CALLOC, LK_F_REALLOC, LK_F_REALLOCARRAY, LK_F_MEMALIGN,
  LK_F_POSIX_MEMALIGN, LK_F_ALIGNED_ALLOC, LK_F_VALLOC, LK_F_PVALLOC, LK_F__MAX
};
extern const char *const lk_fnames[LK_F__MAX];

/* Leak kinds, ordered so that a larger value is "more reachable"; LK_GONE: freed while a thread
** that could not be stopped ran on during the scan (not a leak). */
enum { LK_UNREACHED, LK_INDIRECT, LK_POSSIBLE, LK_REACHABLE, LK_DEFINITE, LK_GONE };

/* Site ids: 0 "stack not recorded" (the site table was full), 1 ljleak's own work in the program
** (never reported); real sites from 2 on. */
#define LK_SITE_INTERNAL 1

typedef void (*lk_range_fn)(uintptr_t lo, uintptr_t hi, void *ud);

/* -- Global state (lk_alloc.c) ------------------------------------------ */
extern volatile int lk_on;   /* recording enabled: after init, before the exit check */
#define LK_ON_RECORD 1       /* lk_on: allocations are recorded */
#define LK_ON_GATE 2         /* lk_on: a check runs: other threads wait at the allocator's door */
extern LK_TLS int lk_busy;   /* this thread is inside the tracker: do not record */
extern LK_TLS int lk_paused; /* ...of which ljleak_pause: the program's own work, not ours */
extern volatile uint32_t lk_ctx;  /* context (tag/epoch) id stamped on new sites */
void *lk_real_malloc_usable_size(void);
void lk_alloc_init(void);

/* -- Life: start-up, exit, fork, exec (lk_life.c) ----------------------- */
extern const char *lk_dir;   /* LJLEAK_DIR: where the raw report goes, or NULL */
extern pid_t lk_pid;

/* -- The tracker's own resources (lk_sys.c) ------------------------------ */
void *lk_sysmap(size_t len);          /* zeroed, never-tracked, MAP_NORESERVE; NULL if refused */
void lk_sysunmap(void *p, size_t len);
extern volatile uint64_t lk_nomem;    /* allocations not recorded for want of memory */
#define LK_CHUNK_BITS 20
#define LK_CHUNK_SIZE ((size_t)1 << LK_CHUNK_BITS)
#define LK_ARENA_CHUNKS 2048          /* ids stay below 2^28 */
typedef struct lk_arena {
  char *chunk[LK_ARENA_CHUNKS];       /* mapped on demand */
  size_t used, max;                   /* bytes handed out (virtual offset); cap (0: none) */
  uint64_t full;                      /* requests refused */
} lk_arena;
void *lk_arena_alloc(lk_arena *a, size_t n, uint32_t *id);  /* caller holds its lock */
static inline void *lk_arena_at(const lk_arena *a, uint32_t id)
{
  size_t off = (size_t)id << 3;
  char *c = off >> LK_CHUNK_BITS < LK_ARENA_CHUNKS
    ? __atomic_load_n(&((lk_arena *)a)->chunk[off >> LK_CHUNK_BITS], __ATOMIC_ACQUIRE) : NULL;
  return c ? c + (off & (LK_CHUNK_SIZE - 1)) : NULL;
}
void lk_spin_lock(volatile int *l);
void lk_spin_unlock(volatile int *l);
void lk_lock_register(volatile int *l);  /* at init, outermost first */
void lk_locks_take_all(void);            /* fork: prepare */
void lk_locks_release_all(void);         /* fork: parent */
void lk_locks_reset_all(void);           /* fork: child */
int lk_own_stack_init(void);
int lk_on_own_stack(void (*fn)(void *), void *arg);  /* 0 if the stack could not be had */
size_t lk_safe_copy(void *dst, uintptr_t src, size_t n);  /* bytes copied before a hole */
int lk_safe_copy_available(void);
int lk_fd_move_high(int fd);             /* dup above the program's range, close-on-exec */
int lk_fd_is_own(int fd);
void lk_fd_forget(int fd);

/* -- Live-block table (lk_table.c) -------------------------------------- */
typedef struct lk_block {
  uintptr_t addr;
  uint64_t size;
  uint32_t site;
  uint32_t state;
} lk_block;
void lk_table_init(void);
void lk_table_set(void *p, size_t size, uint32_t site);
int lk_table_take(void *p, uint64_t *size, uint32_t *site);  /* clear; 1 if tracked */
size_t lk_table_collect(lk_block **out, size_t *want);  /* live blocks, sorted by address */
int lk_table_still(const lk_block *b);   /* still live with the same size and site? */

/* -- Sites: stack capture and interning (lk_stack.c) -------------------- */
#define LK_MAXDEPTH 64
typedef struct lk_site {
  uint32_t next;     /* hash chain (site id) */
  uint32_t hash;
  uint16_t depth;
  uint8_t fn;        /* LK_F_* */
  uint8_t flags;
  uint32_t ctx;
  uint32_t lua;      /* interned Lua stack (lk_luavm.c), 0 if none */
  uint32_t pad;
  uintptr_t ips[];   /* return addresses, innermost first */
} lk_site;
void lk_stack_init(void);
uint32_t lk_site_capture(int fn, uintptr_t ra);  /* ra: the allocation call's return address */
const lk_site *lk_site_get(uint32_t id);
int lk_site_mark(uint32_t id);  /* set the site's "reported" flag; returns its old value */
extern volatile uint64_t lk_sites_dropped;  /* allocations recorded under site 0 */

/* -- Interning byte strings (lk_intern.c) -------------------------------- */
typedef struct lk_itab {
  size_t nbuckets;               /* a power of 2 */
  uint32_t *buckets;
  volatile int lock;
  lk_arena arena;
} lk_itab;
#define LK_ITAB(max, nbuckets) { (nbuckets), NULL, 0, { { NULL }, 0, (max), 0 } }
uint32_t lk_intern(lk_itab *t, const void *key, size_t n, uint16_t aux);  /* 0 if full */
const void *lk_intern_get(const lk_itab *t, uint32_t id, size_t *n, uint16_t *aux);
int lk_intern_mark(lk_itab *t, uint32_t id);  /* set "reported"; returns the old value */

/* -- Contexts: tag and snapshot epoch (lk_api.c) -------------------------- */
void lk_ctx_init(void);
const char *lk_ctx_tag(uint32_t ctx, uint32_t *epoch, const char **note);  /* NULL: no tag */
int lk_ctx_mark(uint32_t ctx);
extern LK_TLS int lk_in_finalizer;       /* an ffi.gc finalizer runs on this thread */
void lk_bad_free(void *p);               /* free() of an unknown block inside a finalizer */

/* -- The Lua VM (lk_luavm.c) --------------------------------------------- */
extern int lk_lua_state;                 /* 0 none attached, 1 open, 2 closed (raw: lua_state) */
void lk_luavm_init(void);
const char *lk_lua_problem(void);        /* why Lua frames are unavailable, or NULL */
uint32_t lk_lua_capture(void);           /* Lua stack of the current allocation, 0 if none */
typedef void (*lk_lua_frame_fn)(int line, int flags, const char *name, const char *src, void *ud);
int lk_lua_frames(uint32_t id, lk_lua_frame_fn fn, void *ud);
int lk_lua_arena_foreach(lk_range_fn live, void *ud);   /* chunks in use; 0 if unknown */
void lk_lua_arena_outside(uintptr_t lo, uintptr_t hi, lk_range_fn fn, void *ud);
int lk_lua_mark(uint32_t id);            /* set "reported"; returns the old value */

/* -- Modules and foreign mappings (lk_maps.c) --------------------------- */
typedef struct lk_module {
  uintptr_t base;            /* load bias */
  uintptr_t lo, hi;          /* extent of its PT_LOAD segments */
  int nw;                    /* writable segments */
  uintptr_t wlo[8], whi[8];
  int self;                  /* the tracker itself or something it loaded */
  char path[256];
} lk_module;
void lk_maps_init(void);
void lk_maps_snapshot(void);             /* modules loaded now (call before parking threads) */
int lk_module_count(void);
const lk_module *lk_module_get(int i);
int lk_module_find(uintptr_t ip);        /* index or -1 */
extern uintptr_t lk_self_lo, lk_self_hi;  /* the tracker's own code */
static inline int lk_ip_in_self(uintptr_t ip) { return ip >= lk_self_lo && ip < lk_self_hi; }
int lk_ip_in_ldso(uintptr_t ip);
void lk_maps_after_fork(void);
/* Foreign anonymous mappings (e.g. LuaJIT's GC arena): roots while mapped. */
extern volatile unsigned lk_fm_gen;
int lk_foreign_find(uintptr_t a, uintptr_t *lo, uintptr_t *hi);
int lk_foreign_find_stopped(uintptr_t a);  /* no lock: the world is stopped */
void lk_maps_foreach_foreign(lk_range_fn fn, void *ud);
/* Clip [lo,hi) to readable mappings of /proc/self/maps and call fn on each piece. */
void lk_maps_readable(uintptr_t lo, uintptr_t hi, lk_range_fn fn, void *ud);
int lk_maps_stack_top(uintptr_t *lo, uintptr_t *hi);  /* main thread [stack] */
void lk_maps_load(void);                 /* re-read /proc/self/maps */

/* -- Threads (lk_thread.c) ---------------------------------------------- */
void lk_thread_init(void);
void lk_thread_after_fork(void);
void lk_threads_park(void);               /* stop every other known thread */
void lk_threads_unpark(void);             /* ... and let them go on (mid-run checks) */
void lk_threads_foreach_stack(lk_range_fn fn, void *ud, long *tid);  /* other threads' stacks */
int lk_threads_unstopped(void);            /* threads that did not park at the last check */
void lk_gate_wait(uintptr_t p);            /* wait while a check runs (p: a block being freed) */
int lk_threads_unstopped_list(pid_t *tids, int cap);
int lk_thread_self_stack(uintptr_t *hi);   /* top of the calling thread's stack */
extern uintptr_t lk_main_sp;              /* frame of main() */
extern volatile int lk_main_returned;

/* -- Root scan and classification (lk_scan.c) --------------------------- */
typedef struct lk_result {
  lk_block *blocks;
  size_t n, cap;
  size_t roots_bytes;
  uint32_t *work;
  size_t nomem;          /* live blocks that could not be classified for want of memory */
  int unsafe;            /* a thread ran on and its memory was read directly */
} lk_result;
/* The checking thread: its stack is scanned from sp up, and regs (if any) are roots. */
typedef struct lk_scan_from {
  uintptr_t sp;
  const uintptr_t *regs;
  long tid;
} lk_scan_from;
void lk_scan_init(void);
void lk_scan(lk_result *r, const lk_scan_from *from);  /* the world must be stopped */
void lk_result_free(lk_result *r);
uint32_t lk_site_with_ctx(uint32_t site, uint32_t ctx);  /* same stack, another context */

/* -- Raw report (lk_report.c) ------------------------------------------- */
void lk_report_write(const lk_result *r);
void lk_report_mark_live(pid_t pid);     /* proc.PID.live until the report is written */
void lk_report_note(pid_t pid, const char *suffix, const char *verb, const char *shown, const char *why);
void lk_report_note_remove(pid_t pid, const char *suffix);

#endif
