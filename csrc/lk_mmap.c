/* ljleak tracker: anonymous mappings the program made itself through mmap (LuaJIT's GC arena and
** machine code): roots while mapped, and how an allocation called from JIT code is recognised. */
#include "lk_mmap.h"
#include "lk_lock.h"
#include "lk_maps.h"
#include "lk_state.h"
#include "lk_sys.h"

#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct { uintptr_t lo, hi; } lk_range;

/* -- Foreign anonymous mappings ------------------------------------------
** Anonymous mappings made by the program through mmap() (glibc's malloc maps internally and
** never comes here). They hold LuaJIT's GC objects, so cdata contents are roots. */

/* A list is never changed once published: a change is written into the other list (the spare),
** which is then published whole. So a check with the world stopped reads a whole list even when a
** thread is stopped half way through mmap (it cannot wait for the lock: that thread may hold it). */
typedef struct lk_fmlist { size_t n, cap; lk_range r[]; } lk_fmlist;
static lk_fmlist *volatile lk_fm;   /* the list readers see */
static lk_fmlist *lk_fm_spare;      /* the other one, under the lock */
static volatile int lk_fm_lock;
/* A sequence count (odd while a change is published, under the lock): a lookup reads the list
** without the lock and tries again if it changed meanwhile (a seqlock): the list it read may have
** become the spare and been written since. */
static volatile unsigned lk_fm_seq;

static void lk_fm_write_begin(void) { __atomic_add_fetch(&lk_fm_seq, 1, __ATOMIC_ACQ_REL); }
static void lk_fm_write_end(void) { __atomic_add_fetch(&lk_fm_seq, 1, __ATOMIC_RELEASE); }

/* The spare list with room for N ranges (under the lock), or NULL. One too small is replaced by
** one twice as big, and kept: a reader without the lock may still be searching it. */
static lk_fmlist *lk_fm_spare_for(size_t n)
{
  size_t cap = lk_fm_spare ? 2 * lk_fm_spare->cap : 1024;
  lk_fmlist *l;
  if (lk_fm_spare && lk_fm_spare->cap >= n) return lk_fm_spare;
  while (cap < n) cap *= 2;
  l = lk_sysmap(sizeof(lk_fmlist) + cap * sizeof(lk_range));
  if (!l) return NULL;
  l->cap = cap;
  return lk_fm_spare = l;
}

static size_t lk_fm_find_in(const lk_range *fm, size_t n, uintptr_t lo)  /* first region ending above lo */
{
  size_t a = 0, b = n;
  while (a < b) {
    size_t m = (a + b) / 2;
    if (fm[m].hi <= lo) a = m + 1; else b = m;
  }
  return a;
}

/* The list without GONE, then with ADDED (unless empty), published as one change: a region that
** mremap moved is never missing from what a check reads. */
static void lk_fm_change(lk_range gone, lk_range added)
{
  const lk_fmlist *cur;
  lk_fmlist *d;
  size_t i, n, k = 0, at;
  int overlap = 0, add = added.lo < added.hi;
  lk_spin_lock(&lk_fm_lock);
  cur = lk_fm;
  n = cur ? cur->n : 0;
  if (!add && ((at = lk_fm_find_in(cur ? cur->r : NULL, n, gone.lo)) >= n || cur->r[at].lo >= gone.hi)) {
    lk_spin_unlock(&lk_fm_lock);  /* none of it was ours: nothing changes */
    return;
  }
  d = lk_fm_spare_for(n + 2);  /* a hole in the middle splits a region; then the new one */
  if (!d) { lk_spin_unlock(&lk_fm_lock); return; }
  for (i = 0; i < n; i++) {
    lk_range r = cur->r[i];
    if (r.hi <= gone.lo || r.lo >= gone.hi) { d->r[k++] = r; continue; }
    overlap = 1;
    if (r.lo < gone.lo) d->r[k++] = (lk_range){ r.lo, gone.lo };
    if (r.hi > gone.hi) d->r[k++] = (lk_range){ gone.hi, r.hi };
  }
  if (add) {
    at = lk_fm_find_in(d->r, k, added.lo);
    memmove(&d->r[at + 1], &d->r[at], (k - at) * sizeof(lk_range));
    d->r[at] = added;
    k++;
  }
  d->n = k;
  if (overlap) lk_hot_stale();  /* JIT code may be gone (or MAP_FIXED over an old mapping) */
  lk_fm_write_begin();
  __atomic_store_n(&lk_fm, d, __ATOMIC_RELEASE);
  lk_fm_spare = (lk_fmlist *)cur;
  lk_fm_write_end();
  lk_spin_unlock(&lk_fm_lock);
}

static int lk_foreign_lookup(const lk_fmlist *fm, uintptr_t a, lk_range *out)
{
  size_t i;
  if (!fm) return 0;
  i = lk_fm_find_in(fm->r, fm->n, a);
  if (i >= fm->n || fm->r[i].lo > a) return 0;
  *out = fm->r[i];
  return 1;
}

/* Is a inside a foreign mapping? If so, [*lo, *hi) is that mapping. Without the lock: called for
** every allocation whose caller is not known JIT code. */
int lk_foreign_find(uintptr_t a, uintptr_t *lo, uintptr_t *hi)
{
  lk_range r = { 0, 0 };
  unsigned seq;
  int found;
  if (!lk_fm) return 0;
  do {
    while ((seq = __atomic_load_n(&lk_fm_seq, __ATOMIC_ACQUIRE)) & 1) __builtin_ia32_pause();
    found = lk_foreign_lookup(__atomic_load_n(&lk_fm, __ATOMIC_ACQUIRE), a, &r);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
  } while (__atomic_load_n(&lk_fm_seq, __ATOMIC_RELAXED) != seq);
  if (found && lo) { *lo = r.lo; *hi = r.hi; }
  return found;
}

/* The same with the other threads stopped: one of them may hold the lock (the list published is
** whole). */
int lk_foreign_find_stopped(uintptr_t a)
{
  lk_range r;
  return lk_foreign_lookup(__atomic_load_n(&lk_fm, __ATOMIC_ACQUIRE), a, &r);
}

static size_t lk_pagelen(size_t len)
{
  return (len + 4095) & ~(size_t)4095;
}

void lk_maps_foreach_foreign(lk_range_fn fn, void *ud)
{
  const lk_fmlist *l = __atomic_load_n(&lk_fm, __ATOMIC_ACQUIRE);
  size_t i;
  for (i = 0; l && i < l->n; i++) lk_maps_readable(l->r[i].lo, l->r[i].hi, fn, ud);
}

LK_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
  void *p = (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  if (p != MAP_FAILED && (flags & MAP_ANONYMOUS) && lk_busy == lk_paused) {  /* not the tracker's */
    lk_range r = { (uintptr_t)p, (uintptr_t)p + lk_pagelen(len) };
    lk_fm_change(r, r);   /* MAP_FIXED over an old mapping replaces it */
  }
  return p;
}

LK_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
  __attribute__((alias("mmap")));

LK_EXPORT int munmap(void *addr, size_t len)
{
  if (lk_fm) lk_fm_change((lk_range){ (uintptr_t)addr, (uintptr_t)addr + lk_pagelen(len) }, (lk_range){ 0, 0 });
  return (int)syscall(SYS_munmap, addr, len);
}

LK_EXPORT void *mremap(void *old, size_t oldlen, size_t newlen, int flags, ...)
{
  void *newaddr = NULL, *p;
  int tracked;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    newaddr = va_arg(ap, void *);
    va_end(ap);
  }
  tracked = lk_foreign_find((uintptr_t)old, NULL, NULL);
  p = (void *)syscall(SYS_mremap, old, oldlen, newlen, flags, newaddr);
  if (p != MAP_FAILED && tracked) {
    lk_fm_change((lk_range){ (uintptr_t)old, (uintptr_t)old + lk_pagelen(oldlen) },
                 (lk_range){ (uintptr_t)p, (uintptr_t)p + lk_pagelen(newlen) });
  }
  return p;
}

/* -- Setup -------------------------------------------------------------- */

void lk_mmap_init(void)
{
  lk_lock_register(&lk_fm_lock);
}
