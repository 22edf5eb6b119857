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

static lk_range *lk_fm;
static size_t lk_nfm, lk_fm_cap;
static volatile int lk_fm_lock;

/* Room for one more region (under the lock); 0 if none could be had. */
static int lk_fm_room(void)
{
  size_t cap;
  lk_range *n;
  if (lk_nfm < lk_fm_cap) return 1;
  cap = lk_fm_cap ? 2 * lk_fm_cap : 1024;
  n = lk_sysmap(cap * sizeof(lk_range));
  if (!n) return 0;
  if (lk_fm) memcpy(n, lk_fm, lk_nfm * sizeof(lk_range));
  lk_sysunmap(lk_fm, lk_fm_cap * sizeof(lk_range));
  lk_fm = n;
  lk_fm_cap = cap;
  return 1;
}

static size_t lk_fm_find(uintptr_t lo)  /* first region ending above lo */
{
  size_t a = 0, b = lk_nfm;
  while (a < b) {
    size_t m = (a + b) / 2;
    if (lk_fm[m].hi <= lo) a = m + 1; else b = m;
  }
  return a;
}

static void lk_fm_remove_locked(uintptr_t lo, uintptr_t hi)
{
  size_t i = lk_fm_find(lo);
  lk_fm_gen++;
  while (i < lk_nfm && lk_fm[i].lo < hi) {
    lk_range r = lk_fm[i];
    if (r.lo < lo && r.hi > hi) {  /* hole in the middle: split */
      if (!lk_fm_room()) return;
      memmove(&lk_fm[i + 1], &lk_fm[i], (lk_nfm - i) * sizeof(lk_range));
      lk_nfm++;
      lk_fm[i].hi = lo;
      lk_fm[i + 1].lo = hi;
      return;
    }
    if (r.lo < lo) { lk_fm[i].hi = lo; i++; continue; }
    if (r.hi > hi) { lk_fm[i].lo = hi; return; }
    memmove(&lk_fm[i], &lk_fm[i + 1], (lk_nfm - i - 1) * sizeof(lk_range));
    lk_nfm--;
  }
}

static void lk_fm_add(uintptr_t lo, uintptr_t hi)
{
  size_t i;
  lk_spin_lock(&lk_fm_lock);
  lk_fm_remove_locked(lo, hi);  /* MAP_FIXED over an old mapping */
  {
    i = lk_fm_find(lo);
    if (lk_fm_room()) {
      memmove(&lk_fm[i + 1], &lk_fm[i], (lk_nfm - i) * sizeof(lk_range));
      lk_fm[i].lo = lo;
      lk_fm[i].hi = hi;
      lk_nfm++;
    }
  }
  lk_spin_unlock(&lk_fm_lock);
}

static void lk_fm_remove(uintptr_t lo, uintptr_t hi)
{
  if (!lk_fm) return;
  lk_spin_lock(&lk_fm_lock);
  lk_fm_remove_locked(lo, hi);
  lk_spin_unlock(&lk_fm_lock);
}

volatile unsigned lk_fm_gen;  /* bumped whenever a foreign mapping goes away */

static int lk_foreign_lookup(uintptr_t a, uintptr_t *lo, uintptr_t *hi)
{
  size_t i = lk_fm_find(a);
  int r = i < lk_nfm && lk_fm[i].lo <= a;
  if (r && lo) { *lo = lk_fm[i].lo; *hi = lk_fm[i].hi; }
  return r;
}

/* Is a inside a foreign mapping? If so, [*lo, *hi) is that mapping. */
int lk_foreign_find(uintptr_t a, uintptr_t *lo, uintptr_t *hi)
{
  int r;
  if (!lk_fm) return 0;
  lk_spin_lock(&lk_fm_lock);
  r = lk_foreign_lookup(a, lo, hi);
  lk_spin_unlock(&lk_fm_lock);
  return r;
}

/* The same with the other threads stopped: one of them may hold the lock. */
int lk_foreign_find_stopped(uintptr_t a)
{
  return lk_fm ? lk_foreign_lookup(a, NULL, NULL) : 0;
}

static size_t lk_pagelen(size_t len)
{
  return (len + 4095) & ~(size_t)4095;
}

void lk_maps_foreach_foreign(lk_range_fn fn, void *ud)
{
  size_t i;
  for (i = 0; i < lk_nfm; i++) lk_maps_readable(lk_fm[i].lo, lk_fm[i].hi, fn, ud);
}

LK_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
  void *p = (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  if (p != MAP_FAILED && (flags & MAP_ANONYMOUS) && lk_busy == lk_paused)  /* not the tracker's */
    lk_fm_add((uintptr_t)p, (uintptr_t)p + lk_pagelen(len));
  return p;
}

LK_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
  __attribute__((alias("mmap")));

LK_EXPORT int munmap(void *addr, size_t len)
{
  lk_fm_remove((uintptr_t)addr, (uintptr_t)addr + lk_pagelen(len));
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
    lk_fm_remove((uintptr_t)old, (uintptr_t)old + lk_pagelen(oldlen));
    lk_fm_add((uintptr_t)p, (uintptr_t)p + lk_pagelen(newlen));
  }
  return p;
}

/* -- Setup -------------------------------------------------------------- */

void lk_mmap_init(void)
{
  lk_lock_register(&lk_fm_lock);
}
