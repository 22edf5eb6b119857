/* ljleak tracker: classification of live blocks from their roots, with Valgrind's meanings (LSan's
** model: flood fill from the roots, then from each lost block). Works on any sorted block list. */
#ifndef LK_CLASSIFY_H
#define LK_CLASSIFY_H

#include "lk_table.h"

typedef size_t (*lk_usable_f)(void *);

/* What held a block, for LJLEAK_EXPLAIN: a root (index into the root list) or another block. */
typedef struct lk_why {
  uintptr_t at;         /* address of the word that pointed to the block */
  int32_t block;        /* holding block, or -1 */
  int32_t root;         /* root index (the caller's), or -1 */
} lk_why;

typedef struct lk_scanner {
  lk_block *b;
  size_t n;
  uintptr_t lo, hi;        /* address range covered by blocks */
  uint32_t *work;          /* worklist of block indices */
  size_t nwork;
  size_t roots_bytes;
  uint32_t leader;         /* indirect phase: the clique's leader */
  int phase;               /* 0: from roots, 1: from lost blocks */
  int safe;                /* read through lk_safe_copy: some thread still runs */
  lk_usable_f usable;
  long cur_block;          /* the block being scanned, or -1 when a root is */
  int root;                /* the caller's index of the root being scanned (for why) */
  lk_why *why;             /* per block, when explaining */
  uintptr_t *sample;       /* the address of every LK_SAMPLE-th block (lk_find), or NULL */
  size_t nsample;
  int indexed;             /* the table's slots hold block indexes (lk_table_nearest) */
  uint32_t *owner;         /* per block, or NULL (the caller sets it after lk_classify_begin): for an
                              indirect block, the definite block whose loss makes it lost */} lk_scanner;


/* Start on the N live blocks B (sorted by address, state LK_UNREACHED); WORK: room for 2N+1 block
** indices; SAFE: read through lk_safe_copy (a thread may run on); USABLE: the allocator's
** malloc_usable_size, or NULL; WHY: a record per block, or NULL. */
void lk_classify_begin(lk_scanner *s, lk_block *b, size_t n, uint32_t *work, int safe, lk_usable_f usable,
                       lk_why *why);
void lk_classify_held(lk_scanner *s, size_t i);          /* block I is a root (ld.so's own) */
void lk_classify_root(lk_scanner *s, uintptr_t lo, uintptr_t hi);  /* words of [lo, hi) are roots */
void lk_classify_finish(lk_scanner *s);  /* lost blocks: definite and indirect (and their owners);
                                            freed ones gone */
void lk_classify_end(lk_scanner *s);     /* the scanner's own memory given back */
#endif
