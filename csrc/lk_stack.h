/* ljleak tracker: call-stack capture and site interning. A site is (allocation function,
** context, Lua stack, return addresses); each gets a small id. */
#ifndef LK_STACK_H
#define LK_STACK_H

#include "lk_def.h"

typedef struct lk_site {
  uint32_t next;     /* hash chain (site id) */
  uint32_t hash;
  uint16_t depth;
  uint8_t fn;        /* LK_F_* */
  uint8_t flags;
  uint32_t ctx;
  uint32_t lua;      /* interned Lua stack (lk_luavm.c), 0 if none */
  uint32_t stamp;    /* the last report that wrote it (lk_site_stamp) */
  uintptr_t ips[];   /* return addresses, innermost first */
} lk_site;

extern const char *const lk_fnames[LK_F__MAX];
void lk_stack_init(void);
uint32_t lk_site_capture(int fn, uintptr_t ra);  /* ra: the allocation call's return address */
const lk_site *lk_site_get(uint32_t id);
int lk_site_stamp(uint32_t id, uint32_t serial);  /* set; 1 if it had it already */
uint32_t lk_site_with_ctx(uint32_t site, uint32_t ctx);  /* same stack, another context */
extern volatile uint64_t lk_sites_dropped;  /* allocations recorded under site 0 */
void lk_stack_fork_prepare(void);  /* no thread inside the unwinder from here ... */
void lk_stack_fork_done(int child);  /* ... to here (in the parent, and in the child) */

#endif
