/* ljleak tracker: the live-block table, a three-level radix map from block address to (size,
** site). No locks on the hot path. */
#ifndef LK_TABLE_H
#define LK_TABLE_H

#include "lk_def.h"

typedef struct lk_block {
  uintptr_t addr;
  uint64_t size;
  uint32_t site;
  uint32_t state;   /* LK_UNREACHED ... (lk_def.h) */
} lk_block;

void lk_table_init(void);
void lk_table_set(void *p, size_t size, uint32_t site);
int lk_table_take(void *p, uint64_t *size, uint32_t *site);  /* clear; 1 if tracked */
size_t lk_table_collect(lk_block **out, size_t *want);  /* live blocks, sorted by address */
int lk_table_still(const lk_block *b);   /* still live with the same size and site? */
/* fn(addr, size, site, ud) for every live block, in no order; no list made (cheap, repeated). */
typedef void (*lk_block_fn)(uintptr_t addr, uint64_t size, uint32_t site, void *ud);
void lk_table_each(lk_block_fn fn, void *ud);

#endif
