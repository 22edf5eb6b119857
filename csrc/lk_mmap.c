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

static lk_range *volatile lk_fm;
static volatile size_t lk_nfm;
static size_t lk_fm_cap;
static volatile int lk_fm_lock;
/* A sequence count (odd while the list changes, under the lock): a lookup reads the list without
** the lock and tries again if it changed meanwhile (a seqlock). */
static volatile unsigned lk_fm_seq;

static void lk_fm_write_begin(void) { __atomic_add_fetch(&lk_fm_seq, 1, __ATOMIC_ACQ_REL); }
static void lk_fm_write_end(void) { __atomic_add_fetch(&lk_fm_seq, 1, __ATOMIC_RELEASE); }

/* Room for one more region (under the lock); 0 if none could be had. A full array is copied into
** one twice its size and kept: a reader without the lock may still be searching it. */
static int lk_fm_room(void)
{
  size_t cap;
  lk_range *n;
  if (lk_nfm < lk_fm_cap) return 1;
  cap = lk_fm_cap ? 2 * lk_fm_cap : 1024;
  n = lk_sysmap(cap * sizeof(lk_range));
  if (!n) return 0;
  if (lk_fm) memcpy(n, lk_fm, lk_nfm * sizeof(lk_range));
  __atomic_store_n(&lk_fm, n, __ATOMIC_RELEASE);
  lk_fm_cap = cap;
  return 1;
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

static size_t lk_fm_find(uintptr_t lo) { return lk_fm_find_in(lk_fm, lk_nfm, lo); }

static void lk_fm_remove_locked(uintptr_t lo, uintptr_t hi)
{
  size_t i = lk_fm_find(lo);
  if (i < lk_nfm && lk_fm[i].lo < hi) lk_hot_stale();  /* JIT code may be gone */
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
  lk_fm_write_begin();
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
  lk_fm_write_end();
  lk_spin_unlock(&lk_fm_lock);
}

static void lk_fm_remove(uintptr_t lo, uintptr_t hi)
{
  if (!lk_fm) return;
  lk_spin_lock(&lk_fm_lock);
  lk_fm_write_begin();
  lk_fm_remove_locked(lo, hi);
  lk_fm_write_end();
  lk_spin_unlock(&lk_fm_lock);
}

static int lk_foreign_lookup(const lk_range *fm, size_t n, uintptr_t a, lk_range *out)
{
  size_t i = lk_fm_find_in(fm, n, a);
  if (i >= n || fm[i].lo > a) return 0;
  *out = fm[i];
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
    size_t n = __atomic_load_n(&lk_nfm, __ATOMIC_ACQUIRE);  /* before the array: it grows first */
    found = lk_foreign_lookup(__atomic_load_n(&lk_fm, __ATOMIC_ACQUIRE), n, a, &r);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
  } while (__atomic_load_n(&lk_fm_seq, __ATOMIC_RELAXED) != seq);
  if (found && lo) { *lo = r.lo; *hi = r.hi; }
  return found;
}

/* The same with the other threads stopped: one of them may hold the lock. */
int lk_foreign_find_stopped(uintptr_t a)
{
  lk_range r;
  return lk_fm ? lk_foreign_lookup(lk_fm, lk_nfm, a, &r) : 0;
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
