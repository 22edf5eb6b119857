/* ljleak tracker: what is loaded and what is readable. Loaded objects (for frames and data
** roots, kept after dlclose), the readable mappings of /proc/self/maps. */
#ifndef LK_MAPS_H
#define LK_MAPS_H

#include "lk_def.h"

typedef struct lk_module {
  uintptr_t base;            /* load bias */
  uintptr_t lo, hi;          /* extent of its PT_LOAD segments */
  int nw;                    /* writable segments */
  uintptr_t wlo[8], whi[8];
  int self;                  /* the tracker itself or something it loaded */
  char path[256];
} lk_module;

void lk_maps_init(void);
void lk_maps_snapshot(void);             /* modules loaded now (call before parking threads) */
const char *lk_exe_path(void);           /* /proc/self/exe, read once ("" if unreadable) */
int lk_module_count(void);
const lk_module *lk_module_get(int i);
int lk_module_find(uintptr_t ip);        /* index or -1 */
extern uintptr_t lk_self_lo, lk_self_hi;  /* the tracker's own code */
static inline int lk_ip_in_self(uintptr_t ip) { return ip >= lk_self_lo && ip < lk_self_hi; }
int lk_ip_in_ldso(uintptr_t ip);
/* Clip [lo,hi) to readable mappings of /proc/self/maps and call fn on each piece. */
void lk_maps_readable(uintptr_t lo, uintptr_t hi, lk_range_fn fn, void *ud);
int lk_maps_stack_top(uintptr_t *lo, uintptr_t *hi);  /* main thread [stack] */
void lk_maps_load(void);                 /* re-read /proc/self/maps */

#endif
