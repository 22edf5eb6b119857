/* Unit test of the live-block table (csrc/lk_table.c) on synthetic addresses: set, take, the
** sorted collection, the size cap, the 16-byte half of a granule, refusals, the fast forms in the
** leaves used last (one per way), a collection that reads only the pages written, and the blocks' indexes the table
** holds during a scan (lk_table_nearest), then its content back; the pages' stamps, by which a walk
** for the blocks born since an epoch reads only the pages recorded in since. TAP output. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "../../csrc/lk_table.h"
#include "../../csrc/lk_sys.h"
#include "tap.h"

typedef struct walk_sites { unsigned char has[64]; } walk_sites;

static void walk_add(uintptr_t addr, uint64_t size, uint32_t site, void *ud)
{
  (void)addr;
  (void)size;
  if (site < 64) ((walk_sites *)ud)->has[site] = 1;
}

static void walk(uint32_t epoch, walk_sites *w)
{
  memset(w, 0, sizeof(*w));
  lk_table_each_since(epoch, walk_add, w);
}

int main(void)
{
  lk_block *b;
  size_t n, want;
  uint64_t size;
  uint32_t site;
  uintptr_t base = (uintptr_t)0x7f1234500000;
  lk_table_init();
  n = lk_table_collect(&b, &want, 0);
  ok(n == 0 && b == NULL && want == 0, "an empty table collects nothing");

  lk_table_set((void *)(base + 0x1000), 100, 7);
  lk_table_set((void *)(base + 0x10), 16, 9);             /* the second half of a 32-byte granule */
  lk_table_set((void *)(base + 0x40000000), 48, 11);      /* another leaf, 1 GiB further */
  lk_table_set((void *)(base + 0x20), (size_t)1 << 40, 12);  /* beyond the slot's 35 bits of size */
  lk_table_set((void *)(base + 0x38), 8, 13);             /* not 16-byte aligned: refused */
  n = lk_table_collect(&b, &want, 0);
  ok(n == 4 && want == 4, "four blocks collected, the misaligned one refused");
  ok(n == 4 && b[0].addr == base + 0x10 && b[1].addr == base + 0x20 && b[2].addr == base + 0x1000 &&
     b[3].addr == base + 0x40000000, "in address order, the half-granule address kept");
  ok(n == 4 && b[0].size == 16 && b[0].site == 9 && b[2].size == 100 && b[2].site == 7 && b[3].site == 11,
     "with their sizes and sites");
  ok(n == 4 && b[1].size == ((uint64_t)1 << 35) - 1 && b[0].state == LK_UNREACHED,
     "a 1 TiB size kept as the largest the slot holds (32 GiB), state unreached");
  ok(lk_table_still(&b[2]), "a block still live as collected");
  if (b) lk_sysunmap(b, n * sizeof(lk_block));

  ok(lk_table_take((void *)(base + 0x1000), &size, &site) && size == 100 && site == 7,
     "take gives the size and site");
  ok(!lk_table_take((void *)(base + 0x1000), &size, &site), "a second take finds nothing (a double free)");
  ok(!lk_table_take((void *)(base + 0x2000), NULL, NULL), "an address never set is not tracked");
  ok(!lk_table_take((void *)((uintptr_t)1 << 50), NULL, NULL), "an address beyond 47 bits is not tracked");
  lk_table_set((void *)(base + 0x10), 24, 10);            /* the same address again: replaced */
  n = lk_table_collect(&b, &want, 0);
  ok(n == 3 && b[0].size == 24 && b[0].site == 10, "a block set again at the same address replaces it");
  {
    lk_block gone = b[0];
    gone.size = 25;
    ok(!lk_table_still(&gone), "a block with another size is not the one collected");
  }
  if (b) lk_sysunmap(b, n * sizeof(lk_block));

  /* The fast forms work in the leaves used last (one per way), and only there. */
  lk_table_set((void *)(base + 0x2000), 40, 20);          /* the leaf of base is the last used */
  ok(lk_table_set_fast((void *)(base + 0x3010), 50, 21), "a fast set in the leaf used last");
  ok(!lk_table_set_fast((void *)(base + 0x80000000), 60, 22), "no fast set in another leaf (of the same way)");
  ok(lk_table_take((void *)(base + 0x3010), &size, &site) && size == 50 && site == 21,
     "the fast set recorded size and site (and the 16-byte half)");
  lk_table_set((void *)(base + 0x3010), 50, 21);
  ok(lk_table_take_fast((void *)(base + 0x3010)), "a fast take finds it");
  ok(!lk_table_take_fast((void *)(base + 0x3010)), "a second fast take finds nothing");
  ok(!lk_table_take((void *)(base + 0x3010), NULL, NULL), "nor does the full take: it was cleared");
  lk_table_set((void *)(base + 0x100000 + 0x10), 16, 24);  /* the next leaf, another way */
  ok(lk_table_set_fast((void *)(base + 0x3020), 16, 25) && lk_table_take_fast((void *)(base + 0x3020)),
     "a leaf of another way used since: the first is still remembered");
  lk_table_take((void *)(base + 0x100000 + 0x10), NULL, NULL);
  lk_table_set((void *)(base + 0x40000000 + 0x100), 70, 23);  /* 1 GiB further, the same way */
  ok(!lk_table_take_fast((void *)(base + 0x2000)), "no fast take once its way holds another leaf");
  ok(lk_table_take((void *)(base + 0x2000), &size, &site) && size == 40 && site == 20,
     "where the full take finds the block");

  /* A collection reads only a leaf's pages that were written: the rest stay out of memory. */
  {
    uintptr_t far = (uintptr_t)0x7e0000000000;
    unsigned char vec[64];
    int written = 0, k;
    lk_table_set((void *)(far + 0x10), 16, 30);             /* the first page of a new leaf */
    lk_table_set((void *)(far + 0xfff00), 16, 31);          /* its last page */
    n = lk_table_collect(&b, &want, 0);
    ok(n >= 2 && b[0].addr == far + 0x10 && b[1].addr == far + 0xfff00 && b[1].site == 31,
       "both blocks of the new leaf collected, first (the lowest addresses)");
    if (b) lk_sysunmap(b, n * sizeof(lk_block));
    lk_table_set_fast((void *)(far + 0x20), 16, 32);        /* the leaf's address is now known */
    if (mincore((void *)((uintptr_t)lk_self.leaf[((far + 0x20) >> LK_LEAF_SHIFT) & (LK_LEAF_WAYS - 1)].slots),
                64 * 4096, vec) == 0)
      for (k = 0; k < 64; k++) written += vec[k] & 1;
    ok(written == 2, "the leaf's other 62 pages were never read");
  }

  /* A collection that leaves the blocks' indexes in the table, then puts the blocks back. */
  {
    uintptr_t at = (uintptr_t)0x7d0000000000;
    long i0, i1;
    lk_table_set((void *)(at + 0x100), 40, 40);
    lk_table_set((void *)(at + 0x130), 16, 41);       /* the second half of the next granule */
    lk_table_set((void *)(at + 0x2000), 4096, 42);    /* far below its end: more than 64 granules */
    n = lk_table_collect(&b, &want, 1);
    i0 = lk_table_nearest(at + 0x100);
    i1 = lk_table_nearest(at + 0x130);
    ok(i0 >= 0 && (size_t)i0 < n && b[i0].addr == at + 0x100 && b[i0].site == 40 &&
       i1 == i0 + 1 && b[i1].addr == at + 0x130, "the index of a block at its start, its half granule's too");
    ok(lk_table_nearest(at + 0x127) == i0 && lk_table_nearest(at + 0x12f) == i0 &&
       lk_table_nearest(at + 0x140) == i1, "an address after a block's start: that block (held or not: the caller checks)");
    ok(lk_table_nearest(at + 0x80) == -1, "below the leaf's first block, within reach: unknown");
    ok(lk_table_nearest(at + 0x2000 + 0x10) >= 0 && lk_table_nearest(at + 0x2000 + 4000) == -1,
       "an address more than 64 granules above the nearest start: unknown (a binary search)");
    lk_table_restore(b, n);
    if (b) lk_sysunmap(b, n * sizeof(lk_block));
    ok(lk_table_take((void *)(at + 0x130), &size, &site) && size == 16 && site == 41 &&
       lk_table_take((void *)(at + 0x2000), &size, &site) && size == 4096 && site == 42,
       "restored: each block's size and site back in its slot");
  }
  /* Page stamps: a walk since an epoch reads the pages of slots recorded in since (by either form),
  ** where the blocks born since are; the epoch is never lowered. */
  {
    uintptr_t st = (uintptr_t)0x7c0000000000;
    walk_sites w;
    lk_table_set((void *)(st + 0x10), 16, 50);                /* epoch 0, the leaf's first page */
    lk_table_epoch_raise(3);
    lk_table_set((void *)(st + 0x8000), 16, 51);              /* epoch 3, a page further (16 KiB) */
    ok(lk_table_set_fast((void *)(st + 0x10000), 16, 52), "a fast set at epoch 3, another page");
    lk_table_epoch_raise(2);
    lk_table_set((void *)(st + 0x14000), 16, 53);             /* still epoch 3: never lowered */
    walk(0, &w);
    ok(w.has[50] && w.has[51] && w.has[52] && w.has[53], "a walk since epoch 0 reads every page");
    walk(3, &w);
    ok(!w.has[50] && w.has[51] && w.has[52] && w.has[53], "since epoch 3: the pages recorded in since, "
       "by the full and the fast form (the first page, of epoch 0, not read)");
    walk(4, &w);
    ok(!w.has[50] && !w.has[51] && !w.has[52] && !w.has[53], "since epoch 4: nothing");
    lk_table_epoch_raise(4);
    ok(lk_table_set_fast((void *)(st + 0x20), 16, 54), "a fast set at epoch 4 in the first page");
    walk(4, &w);
    ok(w.has[50] && w.has[54] && !w.has[51], "since epoch 4: that page (its older block too: the caller "
       "tells them apart by site), not the others");
  }

  return done();
}
