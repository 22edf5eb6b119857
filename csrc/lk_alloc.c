/* ljleak tracker: the interposed malloc family, and bad frees inside ffi.gc finalizers.
** Hot path: guard, real call, record. Everything rare is a separate NOINLINE function. */
#include "lk_alloc.h"
#include "lk_stack.h"
#include "lk_state.h"
#include "lk_table.h"
#include "lk_thread.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

typedef size_t (*lk_usable_f)(void *);
static lk_usable_f lk_usable;

void *lk_real_malloc_usable_size(void) { return (void *)lk_usable; }

/* -- Finalizers ------------------------------------------------------------------
** While an ffi.gc finalizer runs, a free() of memory the tracker never handed out (or already
** took back: a double free) is recorded and not passed on, so the bug is reported instead of
** crashing glibc. */

#define LK_MAXBAD 256
static LK_TLS int lk_in_finalizer;
static LK_TLS uintptr_t lk_bad[LK_MAXBAD];
static LK_TLS int lk_nbad;

void lk_finalizer_enter(void)
{
  lk_in_finalizer++;
  lk_nbad = 0;
}

int lk_finalizer_leave(uintptr_t *out, int cap)
{
  int i;
  if (lk_in_finalizer > 0) lk_in_finalizer--;
  for (i = 0; i < lk_nbad && i < cap; i++) out[i] = lk_bad[i];
  return lk_nbad;
}

static NOINLINE void lk_bad_free(void *p)
{
  if (lk_nbad < LK_MAXBAD) lk_bad[lk_nbad] = (uintptr_t)p;
  lk_nbad++;
}

/* -- Recording ---------------------------------------------------------- */

/* The heap summary's totals (Valgrind's "total heap usage"): allocations recorded (a realloc is
** one, and a free of the old block) and their bytes. Frees are the allocations no longer live. */
static uint64_t lk_allocs, lk_allocated;

void lk_alloc_totals(uint64_t *allocs, uint64_t *bytes)
{
  *allocs = __atomic_load_n(&lk_allocs, __ATOMIC_RELAXED);
  *bytes = __atomic_load_n(&lk_allocated, __ATOMIC_RELAXED);
}

static NOINLINE void lk_record(void *p, size_t n, int fn, uintptr_t ra){
  uint32_t site;
  if (UNLIKELY(lk_on == LK_ON_GATE)) lk_gate_wait(0);
  __atomic_fetch_add(&lk_allocs, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&lk_allocated, n, __ATOMIC_RELAXED);
  lk_busy++;
  site = lk_site_capture(fn, ra);
  lk_table_set(p, n, site);
  lk_busy--;
}

/* While ljleak's own code runs in the program (lk_paused: building a report in Lua), blocks are
** kept under the internal site: never reported, but known, so that their free is no "bad free". */
static NOINLINE void lk_record_internal(void *p, size_t n)
{
  if (lk_busy == lk_paused) lk_table_set(p, n, LK_SITE_INTERNAL);
}

/* The same site as this thread's last allocation from JIT code (lk_stack.h; it is forgotten
** whenever lk_on changes): recorded here, in a leaf it used last (lk_table.h) or through the
** radix map; anything else in lk_record. */
#define LK_RECORD(p, n, fn) \
  do { \
    uintptr_t ra_ = (uintptr_t)__builtin_return_address(0); \
    uint32_t site_; \
    if (LIKELY((p) != NULL) && LIKELY(!lk_busy) && LIKELY(lk_site_fast((fn), ra_, &site_))) { \
      if (UNLIKELY(!lk_table_set_fast((p), (n), site_))) lk_table_set((p), (n), site_); \
    } else if (LIKELY((p) != NULL) && LIKELY(lk_on)) { \
      if (UNLIKELY(lk_busy)) lk_record_internal((p), (n)); \
      else lk_record((p), (n), (fn), ra_); \
    } \
  } while (0)

/* -- Entry points --------------------------------------------------------- */

LK_EXPORT void *malloc(size_t n)
{
  void *p = __libc_malloc(n);
  LK_RECORD(p, n, LK_F_MALLOC);
  return p;
}

/* A free that the fast forms could not settle: a check runs (wait at the gate), the block is in
** another leaf, or was never handed out. Returns 0 when the free must not be passed on. */
static NOINLINE int lk_free_slow(void *p, int on)
{
  if (UNLIKELY(on == LK_ON_GATE) && !lk_busy) lk_gate_wait((uintptr_t)p);
  if (!lk_table_take(p, NULL, NULL) /* before the real free */ && UNLIKELY(lk_in_finalizer) && !lk_busy) {
    lk_bad_free(p);  /* never handed out, or freed twice: report it, do not crash */
    return 0;
  }
  return 1;
}

LK_EXPORT void free(void *p)
{
  int on = lk_on;
  /* Outside a finalizer the slot is cleared unread: the free is passed on either way. */
  if (LIKELY(on == LK_ON_RECORD) && LIKELY(p != NULL) &&
      LIKELY(UNLIKELY(lk_in_finalizer) ? lk_table_take_fast(p) : lk_table_clear_fast(p))) {
    __libc_free(p);
    return;
  }
  if (LIKELY(p != NULL) && LIKELY(on) && !lk_free_slow(p, on)) return;
  __libc_free(p);
}

LK_EXPORT void *calloc(size_t n, size_t sz)
{
  void *p = __libc_calloc(n, sz);
  LK_RECORD(p, n * sz, LK_F_CALLOC);
  return p;
}

static inline __attribute__((always_inline)) void *lk_realloc(void *old, size_t n, int fn)
{
  uint64_t osize = 0;
  uint32_t osite = 0;
  int had;
  if (UNLIKELY(lk_on == LK_ON_GATE) && old && !lk_busy) lk_gate_wait((uintptr_t)old);
  had = old && lk_on && lk_table_take(old, &osize, &osite);
  void *p = __libc_realloc(old, n);
  if (p) LK_RECORD(p, n, fn);
  else if (had && n != 0) lk_table_set(old, osize, osite);  /* failed: still live */
  return p;
}

LK_EXPORT void *realloc(void *old, size_t n)
{
  return lk_realloc(old, n, LK_F_REALLOC);
}

LK_EXPORT void *reallocarray(void *old, size_t n, size_t sz)
{
  size_t total;
  if (__builtin_mul_overflow(n, sz, &total)) { errno = ENOMEM; return NULL; }
  return lk_realloc(old, total, LK_F_REALLOCARRAY);
}

LK_EXPORT void *memalign(size_t align, size_t n)
{
  void *p = __libc_memalign(align, n);
  LK_RECORD(p, n, LK_F_MEMALIGN);
  return p;
}

LK_EXPORT void *aligned_alloc(size_t align, size_t n)
{
  void *p = __libc_memalign(align, n);
  LK_RECORD(p, n, LK_F_ALIGNED_ALLOC);
  return p;
}

LK_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
  void *p;
  if (align % sizeof(void *) != 0 || (align & (align - 1)) != 0 || align == 0) return EINVAL;
  p = __libc_memalign(align, n);
  if (!p) return ENOMEM;
  LK_RECORD(p, n, LK_F_POSIX_MEMALIGN);
  *out = p;
  return 0;
}

LK_EXPORT void *valloc(size_t n)
{
  void *p = __libc_valloc(n);
  LK_RECORD(p, n, LK_F_VALLOC);
  return p;
}

LK_EXPORT void *pvalloc(size_t n)
{
  void *p = __libc_pvalloc(n);
  LK_RECORD(p, n, LK_F_PVALLOC);
  return p;
}

LK_EXPORT size_t malloc_usable_size(void *p)
{
  if (UNLIKELY(!lk_usable)) lk_usable = (lk_usable_f)dlsym(RTLD_NEXT, "malloc_usable_size");
  return p && lk_usable ? lk_usable(p) : 0;
}

/* -- Setup -------------------------------------------------------------- */

void lk_alloc_init(void)
{
  lk_usable = (lk_usable_f)dlsym(RTLD_NEXT, "malloc_usable_size");
}
