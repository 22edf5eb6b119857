/* ljleak tracker: anonymous mappings the program made itself (LuaJIT's GC arena and machine
** code): roots while mapped, and where an allocation's caller is JIT code. */
#ifndef LK_MMAP_H
#define LK_MMAP_H

#include "lk_def.h"

void lk_mmap_init(void);
int lk_foreign_find(uintptr_t a, uintptr_t *lo, uintptr_t *hi);
int lk_foreign_find_stopped(uintptr_t a);  /* no lock: the world is stopped */
void lk_maps_foreach_foreign(lk_range_fn fn, void *ud);

#endif
