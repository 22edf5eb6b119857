/* ljleak tracker: the live-block table, a three-level radix map from block address to (size,
** site). No locks on the hot path. */
#ifndef LK_TABLE_H
#define LK_TABLE_H

#include "lk_def.h"
#include "lk_state.h"

typedef struct lk_block {
  uintptr_t addr;
  uint64_t size;
  uint32_t site;
  uint32_t state;   /* LK_UNREACHED ... (lk_def.h) */
} lk_block;

/* -- The radix map's shape (lk_table.c) ---------------------------------------------------
** One 8-byte slot per 32-byte granule: site (28 bits), bit 4 of the address, size (35 bits). */
#define LK_GRAN_SHIFT 5
#define LK_LEAF_BITS 15                    /* a leaf: 2^15 slots, 1 MiB of addresses */
#define LK_LEAF_SHIFT (LK_GRAN_SHIFT + LK_LEAF_BITS)
#define LK_LEAF_SLOTS ((size_t)1 << LK_LEAF_BITS)
#define LK_SLOTS_PER_PAGE (4096 / sizeof(uint64_t))
#define LK_SITE_BITS 28
#define LK_SITE_MASK ((1u << LK_SITE_BITS) - 1)
#define LK_SIZE_SHIFT (LK_SITE_BITS + 1)
#define LK_SLOT_SIZE_MAX ((UINT64_C(1) << (64 - LK_SIZE_SHIFT)) - 1)

static inline uint64_t lk_slot_value(const void *p, size_t size, uint32_t site)
{
  uint64_t sz = size > LK_SLOT_SIZE_MAX ? LK_SLOT_SIZE_MAX : size;
  return (sz << LK_SIZE_SHIFT) | ((((uintptr_t)p >> 4) & 1) << LK_SITE_BITS) | (site & LK_SITE_MASK);
}

void lk_table_init(void);
void lk_table_set(void *p, size_t size, uint32_t site);
int lk_table_take(void *p, uint64_t *size, uint32_t *site);  /* clear; 1 if tracked */
int lk_table_covers(uintptr_t a);   /* was a block ever recorded in A's MiB (a leaf)? */
size_t lk_table_collect(lk_block **out, size_t *want, int index);  /* live blocks, sorted by address */
int lk_table_still(const lk_block *b);   /* still live with the same size and site? */
/* fn(addr, size, site, ud) for every live block, in no order; no list made (cheap, repeated). */
typedef void (*lk_block_fn)(uintptr_t addr, uint64_t size, uint32_t site, void *ud);
void lk_table_each(lk_block_fn fn, void *ud);

/* With INDEX, lk_table_collect leaves in each collected block's slot its index in the collection
** (the world stopped: nothing else reads the table) until lk_table_restore puts the blocks back:
** meanwhile lk_table_nearest finds the block at an address in a few reads. */
long lk_table_nearest(uintptr_t w);      /* last collected block starting at or before w; -1: unknown */
void lk_table_restore(const lk_block *b, size_t n);

/* -- Page stamps ---------------------------------------------------------------------------
** After a leaf's slots, one uint32 per page of slots (LK_SLOTS_PER_PAGE slots, 16 KiB of heap):
** the highest lk_table_epoch current when a block was recorded in it. A block born in epoch E
** (its site's context) was recorded while lk_table_epoch >= E, so the blocks born since an epoch
** are all in pages stamped with it or later: a walk for them (lk_table_each_since: a busted
** test's check, a growth series' count) reads those pages only, not the whole heap's slots.
** Stamps only rise (a compare-and-swap when they must; no store when they need not). */
extern volatile uint32_t lk_table_epoch;
void lk_table_epoch_raise(uint32_t epoch);   /* the API's current epoch (never lowered) */
void lk_table_each_since(uint32_t epoch, lk_block_fn fn, void *ud);  /* pages stamped >= epoch */

static inline void lk_page_stamp(uint64_t *slots, size_t j)
{
  uint32_t *st = (uint32_t *)(slots + LK_LEAF_SLOTS) + j / LK_SLOTS_PER_PAGE;
  uint32_t now = __atomic_load_n(&lk_table_epoch, __ATOMIC_RELAXED);
  uint32_t old = __atomic_load_n(st, __ATOMIC_RELAXED);
  while (UNLIKELY(old < now) &&
         !__atomic_compare_exchange_n(st, &old, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

/* -- The hot path -------------------------------------------------------------------------
** The leaves this thread used last, one per way (lk_self.leaf[LEAF & (LK_LEAF_WAYS - 1)], LEAF
** = address >> LK_LEAF_SHIFT: key, LEAF + 1, 0 for none; slots): the blocks a thread allocates
** and frees lie in a few MiB (16 ways: 16 consecutive MiB). The fast forms do what lk_table_set
** and lk_table_take do, in those leaves only; 0: not done (another leaf, or for take, no block
** there), call the full form. */

static inline int lk_leaf_way(uintptr_t a) { return (int)((a >> LK_LEAF_SHIFT) & (LK_LEAF_WAYS - 1)); }
static inline size_t lk_leaf_index(uintptr_t a) { return (a >> LK_GRAN_SHIFT) & (LK_LEAF_SLOTS - 1); }

/* Does this thread remember A's leaf? Its slots into *SLOTS (whatever the answer). */
static inline int lk_leaf_fast(uintptr_t a, uint64_t **slots)
{
  const lk_thread_state *t = &lk_self;
  int way = lk_leaf_way(a);
  *slots = t->leaf[way].slots;
  return (a >> LK_LEAF_SHIFT) + 1 == t->leaf[way].key;
}

/* P: 16-byte aligned (glibc's blocks are); SITE below 2^28. */
static inline int lk_table_set_fast(void *p, size_t size, uint32_t site)
{
  uint64_t *slots;
  size_t j = lk_leaf_index((uintptr_t)p);
  if (UNLIKELY(!lk_leaf_fast((uintptr_t)p, &slots))) return 0;
  lk_page_stamp(slots, j);
  __atomic_store_n(&slots[j], lk_slot_value(p, size, site), __ATOMIC_RELAXED);
  return 1;
}

/* Clear P's slot in a leaf remembered, without reading it first (the read is a cache miss in a
** big heap, and a free outside a finalizer is passed on whether the block was tracked or not:
** a granule belongs to one block at most). 0: not in a leaf remembered. */
static inline int lk_table_clear_fast(void *p)
{
  uint64_t *slots;
  if (UNLIKELY(!lk_leaf_fast((uintptr_t)p, &slots))) return 0;
  __atomic_store_n(&slots[lk_leaf_index((uintptr_t)p)], 0, __ATOMIC_RELAXED);
  return 1;
}

static inline int lk_table_take_fast(void *p)
{
  uint64_t *slots, *s;
  if (UNLIKELY(!lk_leaf_fast((uintptr_t)p, &slots))) return 0;
  s = &slots[lk_leaf_index((uintptr_t)p)];
  if (UNLIKELY(!__atomic_load_n(s, __ATOMIC_RELAXED))) return 0;
  __atomic_store_n(s, 0, __ATOMIC_RELAXED);
  return 1;
}

#endif
