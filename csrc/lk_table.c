/* ljleak tracker: the live-block table, a three-level radix map from block address to (size, site).
** No locks on the hot path; levels are mapped when first needed, so little is reserved up front. */
#include "lk_table.h"
#include "lk_lock.h"
#include "lk_sys.h"

#include <string.h>

/* -- Radix map ----------------------------------------------------------
** glibc chunks are at least 32 bytes apart, so one 8-byte slot per 32-byte granule identifies a
** block by its start. A slot holds site (28 bits), bit 4 of the address (blocks are 16-byte
** aligned) and size (35 bits); 0 means no block. A slot belongs to its block: set after the real
** allocation, cleared before the real free, so no lock is needed. A leaf's pages cost memory only
** once written: the collection reads only those (lk_pages_in_use). */

#define LK_ADDR_BITS 47
#define LK_MID_BITS 13                     /* a mid: 2^13 leaves, 8 GiB */
#define LK_TOP_BITS (LK_ADDR_BITS - LK_LEAF_SHIFT - LK_MID_BITS)
#define LK_LEAF_BYTES (LK_LEAF_SLOTS * sizeof(uint64_t))
#define LK_LEAF_PAGES (LK_LEAF_BYTES / 4096)
#define LK_LEAF_MAP (LK_LEAF_BYTES + 4096)   /* the slots, then their pages' stamps (lk_table.h) */

volatile uint32_t lk_table_epoch;

void lk_table_epoch_raise(uint32_t epoch)
{
  uint32_t old = __atomic_load_n(&lk_table_epoch, __ATOMIC_RELAXED);
  while (old < epoch &&
         !__atomic_compare_exchange_n(&lk_table_epoch, &old, epoch, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
}


static uint64_t **lk_top[(size_t)1 << LK_TOP_BITS];  /* mids, made on demand */
static uint32_t *volatile lk_leaves;  /* (top << LK_MID_BITS | mid) of every leaf made */
static volatile size_t lk_nleaves;
static size_t lk_leaves_cap;
static volatile int lk_leaf_lock;

void lk_table_init(void)
{
  lk_lock_register(&lk_leaf_lock);
}

/* A check with the world stopped reads the leaves without the lock: the thread holding it may be
** stopped at any instruction here. So every step leaves what a reader sees whole: a new list is
** published before the count passes the old one's end, and the old list is kept (a reader may still
** be reading it; together they are less than twice the last); a leaf is in its mid before it is
** counted. */
static NOINLINE uint64_t *lk_leaf_make(size_t ti, size_t mi)
{
  uint64_t **mid, *leaf = NULL;
  lk_spin_lock(&lk_leaf_lock);
  mid = lk_top[ti];
  if (!mid) {
    mid = lk_sysmap(sizeof(uint64_t *) << LK_MID_BITS);
    if (mid) __atomic_store_n(&lk_top[ti], mid, __ATOMIC_RELEASE);
  }
  if (mid) leaf = mid[mi];
  if (mid && !leaf && lk_nleaves == lk_leaves_cap) {  /* grow the list of leaves */
    size_t cap = lk_leaves_cap ? 2 * lk_leaves_cap : 1024;
    uint32_t *n = lk_sysmap(cap * sizeof(uint32_t));
    if (n) {
      if (lk_leaves) memcpy(n, lk_leaves, lk_nleaves * sizeof(uint32_t));
      __atomic_store_n(&lk_leaves, n, __ATOMIC_RELEASE);
      lk_leaves_cap = cap;
    }
  }
  if (mid && !leaf && lk_nleaves < lk_leaves_cap) {
    leaf = lk_sysmap(LK_LEAF_MAP);
    if (leaf) {
      __atomic_store_n(&mid[mi], leaf, __ATOMIC_RELEASE);
      lk_leaves[lk_nleaves] = (uint32_t)(ti << LK_MID_BITS | mi);
      __atomic_store_n(&lk_nleaves, lk_nleaves + 1, __ATOMIC_RELEASE);
    }
  }
  lk_spin_unlock(&lk_leaf_lock);
  return leaf;
}

static inline uint64_t *lk_slot(uintptr_t a, int make)
{
  size_t g = a >> LK_GRAN_SHIFT, ti = g >> (LK_LEAF_BITS + LK_MID_BITS);
  size_t mi = (g >> LK_LEAF_BITS) & (((size_t)1 << LK_MID_BITS) - 1), j = g & (LK_LEAF_SLOTS - 1);
  uint64_t **mid, *leaf = NULL;
  if (UNLIKELY(a >> LK_ADDR_BITS)) return NULL;
  mid = __atomic_load_n(&lk_top[ti], __ATOMIC_ACQUIRE);
  if (LIKELY(mid != NULL)) leaf = __atomic_load_n(&mid[mi], __ATOMIC_ACQUIRE);
  if (UNLIKELY(!leaf)) {
    if (!make) return NULL;
    leaf = lk_leaf_make(ti, mi);
    if (!leaf) return NULL;
  }
  {  /* for the next fast forms */
    int way = lk_leaf_way(a);
    lk_self.leaf[way].key = (a >> LK_LEAF_SHIFT) + 1;
    lk_self.leaf[way].slots = leaf;
  }
  return &leaf[j];
}

void lk_table_set(void *p, size_t size, uint32_t site)
{
  uint64_t *s;
  if (UNLIKELY((uintptr_t)p & 15)) return;  /* not from glibc's allocator: cannot happen */
  s = lk_slot((uintptr_t)p, 1);
  if (UNLIKELY(!s)) { __atomic_fetch_add(&lk_nomem, 1, __ATOMIC_RELAXED); return; }
  {
    size_t j = lk_leaf_index((uintptr_t)p);
    lk_page_stamp(s - j, j);   /* s - j: the leaf's first slot */
  }
  __atomic_store_n(s, lk_slot_value(p, size, site), __ATOMIC_RELAXED);
}

int lk_table_covers(uintptr_t a)
{
  return lk_slot(a, 0) != NULL;
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

static void lk_sift_u32(uint32_t *a, size_t i, size_t n)
{
  uint32_t x = a[i];
  size_t c;
  while ((c = 2 * i + 1) < n) {
    if (c + 1 < n && a[c + 1] > a[c]) c++;
    if (a[c] <= x) break;
    a[i] = a[c];
    i = c;
  }
  a[i] = x;
}

static void lk_sort_u32(uint32_t *a, size_t n)  /* a heap sort: qsort may call malloc */
{
  size_t i;
  uint32_t x;
  for (i = n / 2; i-- > 0;) lk_sift_u32(a, i, n);
  for (i = n; i-- > 1;) {
    x = a[0];
    a[0] = a[i];
    a[i] = x;
    lk_sift_u32(a, 0, i);
  }
}

/* -- Indexes for a scan --------------------------------------------------------------------
** While a check runs with every other thread stopped, the slot of each collected block holds its
** index in the collection instead (its site field all ones, an id no site gets): the classifier
** then finds the block holding an address by reading the table near it, not by a binary search
** over millions of blocks (each step a cache miss: 200 ns a block at exit). */
#define LK_SLOT_INDEXED LK_SITE_MASK
#define LK_NEAREST_REACH 64      /* granules looked at below an address (2 KiB) */

static uint64_t lk_index_value(uintptr_t a, size_t i)
{
  return ((uint64_t)(i + 1) << LK_SIZE_SHIFT) | ((uint64_t)((a >> 4) & 1) << LK_SITE_BITS) | LK_SLOT_INDEXED;
}

long lk_table_nearest(uintptr_t w)
{
  uint64_t *s = lk_slot(w, 0), v;
  size_t j = lk_leaf_index(w), n;
  uintptr_t g = w & ~(uintptr_t)((1 << LK_GRAN_SHIFT) - 1);
  if (!s) return -1;
  for (n = 0; n <= LK_NEAREST_REACH; n++, s--, g -= 1 << LK_GRAN_SHIFT) {
    if ((v = *s)) {
      if ((v & LK_SITE_MASK) != LK_SLOT_INDEXED) return -1;
      if (g + (((v >> LK_SITE_BITS) & 1) << 4) <= w) return (long)(v >> LK_SIZE_SHIFT) - 1;
    }
    if (j-- == 0) break;   /* the leaf's first slot: what is below is in another leaf */
  }
  return -1;
}

void lk_table_restore(const lk_block *b, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++) {
    uint64_t *s = lk_slot(b[i].addr, 0);
    if (s) *s = lk_slot_value((const void *)b[i].addr, b[i].size, b[i].site);
  }
}

static uint64_t *lk_leaf_of(uint32_t k)
{
  uint64_t **mid = __atomic_load_n(&lk_top[k >> LK_MID_BITS], __ATOMIC_ACQUIRE);
  return mid ? __atomic_load_n(&mid[k & (((uint32_t)1 << LK_MID_BITS) - 1)], __ATOMIC_ACQUIRE) : NULL;
}

/* Every live block, in address order. Called with the world stopped (or from lk_live, with it
** running): without the lock, which a stopped thread may hold (see lk_leaf_make); the list of
** leaves is sorted in a copy of its own, for the same reason. *out is NULL (and 0 returned) when
** there is no block, or when the memory for the list could not be had (*want then says how many
** blocks there were). INDEX: see lk_table_nearest. */
size_t lk_table_collect(lk_block **out, size_t *want, int index)
{
  size_t n = 0, i, j, k = 0, nl = __atomic_load_n(&lk_nleaves, __ATOMIC_ACQUIRE);
  const uint32_t *shared = __atomic_load_n(&lk_leaves, __ATOMIC_ACQUIRE);
  uint32_t *leaves;
  unsigned char used[LK_LEAF_PAGES];
  lk_block *b;
  *out = NULL;
  if (want) *want = 0;
  if (!nl) return 0;
  for (i = 0; i < nl; i++) {
    const uint64_t *slots = lk_leaf_of(shared[i]);
    if (!slots) continue;
    if (!lk_pages_in_use((uintptr_t)slots, LK_LEAF_PAGES, used)) memset(used, 1, sizeof(used));
    for (j = 0; j < LK_LEAF_SLOTS; j++) {
      if (!used[j / LK_SLOTS_PER_PAGE]) { j += LK_SLOTS_PER_PAGE - 1; continue; }
      n += slots[j] != 0;
    }
  }
  if (want) *want = n;
  if (!n) return 0;
  leaves = lk_sysmap(nl * sizeof(uint32_t));
  if (!leaves) return 0;
  memcpy(leaves, shared, nl * sizeof(uint32_t));
  lk_sort_u32(leaves, nl);
  b = lk_sysmap(n * sizeof(lk_block));
  if (!b) { lk_sysunmap(leaves, nl * sizeof(uint32_t)); return 0; }
  for (i = 0; i < nl && k < n; i++) {
    const uint64_t *slots = lk_leaf_of(leaves[i]);
    uintptr_t base = (uintptr_t)leaves[i] << LK_LEAF_SHIFT;
    if (!slots) continue;
    if (!lk_pages_in_use((uintptr_t)slots, LK_LEAF_PAGES, used)) memset(used, 1, sizeof(used));
    for (j = 0; j < LK_LEAF_SLOTS && k < n; j++) {
      uint64_t v;
      if (!used[j / LK_SLOTS_PER_PAGE]) { j += LK_SLOTS_PER_PAGE - 1; continue; }
      if (!(v = slots[j])) continue;
      b[k].addr = base + (j << LK_GRAN_SHIFT) + (((v >> LK_SITE_BITS) & 1) << 4);
      b[k].size = v >> LK_SIZE_SHIFT;
      b[k].site = (uint32_t)(v & LK_SITE_MASK);
      b[k].state = LK_UNREACHED;
      if (index) ((uint64_t *)slots)[j] = lk_index_value(b[k].addr, k);
      k++;
    }
  }
  lk_sysunmap(leaves, nl * sizeof(uint32_t));
  *out = b;
  return k;
}

/* Is the block still live as collected (same size and site)? For scans while a thread ran on. */
int lk_table_still(const lk_block *blk)
{
  uint64_t *s = lk_slot(blk->addr, 0), v;
  if (!s || !(v = __atomic_load_n(s, __ATOMIC_RELAXED))) return 0;
  return (uint32_t)(v & LK_SITE_MASK) == blk->site && (v >> LK_SIZE_SHIFT) == blk->size;
}

/* Every live block given to fn, leaf by leaf (no order, no list): per-site counts of a growth
** check. The leaf lock keeps the list of leaves still; fn must not allocate. */
void lk_table_each(lk_block_fn fn, void *ud)
{
  lk_table_each_since(0, fn, ud);
}

static inline uint64_t lk_word(const uint64_t *slots, size_t j)
{
  return __atomic_load_n(&slots[j], __ATOMIC_RELAXED);
}

/* The same, in the pages stamped EPOCH or later only: every block born in EPOCH or later is
** there (with older ones, which fn tells apart by their site). */
void lk_table_each_since(uint32_t epoch, lk_block_fn fn, void *ud)
{
  size_t i, j;
  unsigned char used[LK_LEAF_PAGES];
  lk_spin_lock(&lk_leaf_lock);
  for (i = 0; i < lk_nleaves; i++) {
    const uint64_t *slots = lk_leaf_of(lk_leaves[i]);
    const uint32_t *stamps = (const uint32_t *)(slots + LK_LEAF_SLOTS);
    uintptr_t base = (uintptr_t)lk_leaves[i] << LK_LEAF_SHIFT;
    if (epoch) {
      size_t p, young = 0;
      for (p = 0; p < LK_LEAF_PAGES; p++)
        young += used[p] = __atomic_load_n(&stamps[p], __ATOMIC_RELAXED) >= epoch;
      if (!young) continue;
    } else if (!lk_pages_in_use((uintptr_t)slots, LK_LEAF_PAGES, used)) {
      memset(used, 1, sizeof(used));
    }
    for (j = 0; j < LK_LEAF_SLOTS; j++) {
      uint64_t v;
      if (!used[j / LK_SLOTS_PER_PAGE]) { j += LK_SLOTS_PER_PAGE - 1; continue; }
      if ((j & 7) == 0 && !(lk_word(slots, j) | lk_word(slots, j + 1) | lk_word(slots, j + 2) |
                            lk_word(slots, j + 3) | lk_word(slots, j + 4) | lk_word(slots, j + 5) |
                            lk_word(slots, j + 6) | lk_word(slots, j + 7))) {
        j += 7;  /* eight empty slots (a page is a multiple of eight) */
        continue;
      }
      if (!(v = lk_word(slots, j))) continue;
      fn(base + (j << LK_GRAN_SHIFT) + (((v >> LK_SITE_BITS) & 1) << 4), v >> LK_SIZE_SHIFT,
         (uint32_t)(v & LK_SITE_MASK), ud);
    }
  }
  lk_spin_unlock(&lk_leaf_lock);
}
