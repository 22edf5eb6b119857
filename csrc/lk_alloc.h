/* ljleak tracker: the interposed malloc family, and what it does with a bad free while an
** ffi.gc finalizer runs. */
#ifndef LK_ALLOC_H
#define LK_ALLOC_H

#include "lk_def.h"

void lk_alloc_init(void);
void *lk_real_malloc_usable_size(void);
void lk_finalizer_enter(void);           /* frees of unknown blocks are kept, not passed on */
int lk_finalizer_leave(uintptr_t *out, int cap);  /* those kept (up to cap); how many */
void lk_alloc_totals(uint64_t *allocs, uint64_t *bytes);  /* allocations recorded, and their bytes */

#endif
