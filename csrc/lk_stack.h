/* ljleak tracker: call-stack capture and site interning. A site is (allocation function,
** context, Lua stack, return addresses); each gets a small id. */
#ifndef LK_STACK_H
#define LK_STACK_H

#include "lk_def.h"
#include "lk_luavm.h"
#include "lk_mmap.h"

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

/* -- The hot path --------------------------------------------------------------------------
** JIT code that allocates in a loop makes the same site again and again: its stack is its one
** frame, and its Lua stack follows from the trace that runs. lk_site_capture remembers, per thread,
** the last such site and what it depended on; lk_site_fast gives it back (in *site, returning 1)
** while all of that is unchanged (0: capture). */
typedef struct lk_site_memo {
  uintptr_t ra;        /* the return address, in JIT code */
  uint32_t site;
  int32_t vmstate;     /* lk_lua_vmstate(): a trace's number, or 0 (no VM) */
  unsigned gen;        /* lk_jit_gen */
  int fn;
} lk_site_memo;
extern LK_TLS lk_site_memo lk_smemo;

static inline int lk_site_fast(int fn, uintptr_t ra, uint32_t *site)
{
  const lk_site_memo *m = &lk_smemo;
  *site = m->site;
  return ra == m->ra && fn == m->fn && m->gen == lk_jit_gen && m->vmstate == lk_lua_vmstate();
}

#endif
