/* ljleak tracker: interning of small byte strings (Lua stacks, contexts) into stable u32 ids.
** Lookup is lock-free, insertion takes the table's lock. */
#ifndef LK_INTERN_H
#define LK_INTERN_H

#include "lk_sys.h"

typedef struct lk_itab {
  size_t nbuckets;               /* a power of 2 */
  uint32_t *buckets;
  volatile int lock;
  lk_arena arena;
} lk_itab;
#define LK_ITAB(max, nbuckets) { (nbuckets), NULL, 0, { { NULL }, 0, (max), 0 } }
uint32_t lk_intern(lk_itab *t, const void *key, size_t n, uint16_t aux);  /* 0 if full */
const void *lk_intern_get(const lk_itab *t, uint32_t id, size_t *n, uint16_t *aux);
int lk_intern_stamp(lk_itab *t, uint32_t id, uint32_t serial);  /* set; 1 if it had it already */

#endif
