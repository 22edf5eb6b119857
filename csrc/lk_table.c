/* ljleak tracker: the live-block table, a two-level radix map from block address to (size, site),
** plus the tracker's own never-tracked memory and spinlocks. No locks on the hot path. */
#include "lk_def.h"

#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* -- Internal memory ---------------------------------------------------- */

void *lk_sysmap(size_t len)
{
  void *p = (void *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void lk_sysunmap(void *p, size_t len)
{
  if (p) syscall(SYS_munmap, p, len);
}

void lk_spin_lock(volatile int *l)
{
  int spins = 0;
  while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
      if (++spins > 100) { sched_yield(); spins = 0; }
      else __builtin_ia32_pause();
    }
  }
}

void lk_spin_unlock(volatile int *l)
{
  __atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

/* -- Radix map ----------------------------------------------------------
** glibc chunks are at least 32 bytes apart, so one 8-byte slot per 32-byte granule
** identifies a block by its start. A slot holds site (28 bits), bit 4 of the address (blocks
** are 16-byte aligned) and size (35 bits); 0 means no block. A slot belongs to its block: set after the real allocation,
** cleared before the real free, so no lock is needed. */

#define LK_GRAN_SHIFT 5
#define LK_ADDR_BITS 47
#define LK_LEAF_BITS 20
#define LK_TOP_BITS (LK_ADDR_BITS - LK_GRAN_SHIFT - LK_LEAF_BITS)
#define LK_LEAF_SLOTS ((size_t)1 << LK_LEAF_BITS)
#define LK_SITE_BITS 28
#define LK_SITE_MASK ((1u << LK_SITE_BITS) - 1)
#define LK_SIZE_SHIFT (LK_SITE_BITS + 1)
#define LK_SIZE_MAX ((UINT64_C(1) << (64 - LK_SIZE_SHIFT)) - 1)

/* A leaf is a bitmap of the slot pages ever written, then the slots: the exit scan reads only
** those pages (reading an untouched page costs resident memory on some kernels). */
#define LK_LEAF_HDR 4096
#define LK_SLOTS_PER_PAGE (4096 / sizeof(uint64_t))
#define LK_LEAF_BYTES (LK_LEAF_HDR + LK_LEAF_SLOTS * sizeof(uint64_t))

static inline uint64_t *lk_leaf_slots(uint64_t *leaf) { return leaf + LK_LEAF_HDR / sizeof(uint64_t); }

static inline void lk_leaf_touch(uint64_t *leaf, size_t j)
{
  size_t pg = j / LK_SLOTS_PER_PAGE;
  uint64_t bit = UINT64_C(1) << (pg & 63);
  if (UNLIKELY(!(__atomic_load_n(&leaf[pg >> 6], __ATOMIC_RELAXED) & bit)))
    __atomic_fetch_or(&leaf[pg >> 6], bit, __ATOMIC_RELAXED);
}

static uint64_t **lk_top;          /* 2^LK_TOP_BITS leaf pointers */
static uint32_t *lk_leaves;        /* indices of leaves made, in creation order */
static volatile uint32_t lk_nleaves;
static volatile int lk_leaf_lock;

static NOINLINE uint64_t *lk_leaf_make(size_t ti)
{
  uint64_t *leaf;
  lk_spin_lock(&lk_leaf_lock);
  if (!lk_top) {
    lk_top = lk_sysmap(sizeof(uint64_t *) << LK_TOP_BITS);
    lk_leaves = lk_sysmap(sizeof(uint32_t) << LK_TOP_BITS);
  }
  leaf = lk_top ? __atomic_load_n(&lk_top[ti], __ATOMIC_ACQUIRE) : NULL;
  if (!leaf && lk_top) {
    leaf = lk_sysmap(LK_LEAF_BYTES);
    if (leaf) {
      lk_leaves[lk_nleaves] = (uint32_t)ti;
      __atomic_store_n(&lk_nleaves, lk_nleaves + 1, __ATOMIC_RELEASE);
      __atomic_store_n(&lk_top[ti], leaf, __ATOMIC_RELEASE);
    }
  }
  lk_spin_unlock(&lk_leaf_lock);
  return leaf;
}

static inline uint64_t *lk_slot(uintptr_t a, int make)
{
  size_t g = a >> LK_GRAN_SHIFT, ti = g >> LK_LEAF_BITS;
  uint64_t *leaf;
  if (UNLIKELY(a >> LK_ADDR_BITS)) return NULL;
  leaf = lk_top ? __atomic_load_n(&lk_top[ti], __ATOMIC_ACQUIRE) : NULL;
  if (UNLIKELY(!leaf)) {
    if (!make) return NULL;
    leaf = lk_leaf_make(ti);
    if (!leaf) return NULL;
  }
  if (make) lk_leaf_touch(leaf, g & (LK_LEAF_SLOTS - 1));
  return &lk_leaf_slots(leaf)[g & (LK_LEAF_SLOTS - 1)];
}

void lk_table_set(void *p, size_t size, uint32_t site)
{
  uint64_t *s = lk_slot((uintptr_t)p, 1);
  uint64_t sz = size > LK_SIZE_MAX ? LK_SIZE_MAX : size;
  uint64_t half = ((uintptr_t)p >> 4) & 1;
  if (UNLIKELY((uintptr_t)p & 15)) return;  /* not from glibc's allocator: cannot happen */
  if (s) __atomic_store_n(s, (sz << LK_SIZE_SHIFT) | (half << LK_SITE_BITS) | (site & LK_SITE_MASK),
                          __ATOMIC_RELAXED);
}

int lk_table_take(void *p, uint64_t *size, uint32_t *site)
{
  uint64_t *s = lk_slot((uintptr_t)p, 0), v;
  if (!s || !(v = __atomic_load_n(s, __ATOMIC_RELAXED))) return 0;
  __atomic_store_n(s, 0, __ATOMIC_RELAXED);
  if (size) *size = v >> LK_SIZE_SHIFT;
  if (site) *site = (uint32_t)(v & LK_SITE_MASK);
  return 1;
}

static int lk_page_touched(const uint64_t *leaf, size_t j)
{
  size_t pg = j / LK_SLOTS_PER_PAGE;
  return (leaf[pg >> 6] >> (pg & 63)) & 1;
}

static void lk_sort_u32(uint32_t *a, size_t n)  /* few leaves; qsort may call malloc */
{
  size_t i, j;
  for (i = 1; i < n; i++) {
    uint32_t x = a[i];
    for (j = i; j > 0 && a[j - 1] > x; j--) a[j] = a[j - 1];
    a[j] = x;
  }
}

/* Every live block, in address order. Called with the world stopped. */
size_t lk_table_collect(lk_block **out)
{
  size_t n = 0, i, j, k = 0, cap;
  uint32_t nl = lk_nleaves;
  lk_block *b;
  *out = NULL;
  if (!nl) return 0;
  lk_sort_u32(lk_leaves, nl);
  for (i = 0; i < nl; i++) {
    uint64_t *leaf = lk_top[lk_leaves[i]];
    const uint64_t *slots = lk_leaf_slots(leaf);
    for (j = 0; j < LK_LEAF_SLOTS; j++) {
      if (!lk_page_touched(leaf, j)) { j += LK_SLOTS_PER_PAGE - 1; continue; }
      n += slots[j] != 0;
    }
  }
  cap = n ? n : 1;  /* lk_result_free unmaps (n ? n : 1) blocks */
  b = lk_sysmap(cap * sizeof(lk_block));
  if (!b) return 0;
  for (i = 0; i < nl; i++) {
    uint64_t *leaf = lk_top[lk_leaves[i]];
    const uint64_t *slots = lk_leaf_slots(leaf);
    uintptr_t base = (uintptr_t)lk_leaves[i] << (LK_LEAF_BITS + LK_GRAN_SHIFT);
    for (j = 0; j < LK_LEAF_SLOTS && k < n; j++) {
      uint64_t v;
      if (!lk_page_touched(leaf, j)) { j += LK_SLOTS_PER_PAGE - 1; continue; }
      if (!(v = slots[j])) continue;
      b[k].addr = base + (j << LK_GRAN_SHIFT) + (((v >> LK_SITE_BITS) & 1) << 4);
      b[k].size = v >> LK_SIZE_SHIFT;
      b[k].site = (uint32_t)(v & LK_SITE_MASK);
      b[k].state = LK_UNREACHED;
      k++;
    }
  }
  *out = b;
  return k;
}
