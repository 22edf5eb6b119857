/* ljleak tracker: call-stack capture and site interning. A site is (allocation function,
** context, Lua stack, return addresses); each gets a small id. */
#ifndef LK_STACK_H
#define LK_STACK_H

#include "lk_def.h"
#include "lk_state.h"

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

/* -- The hot path --------------------------------------------------------------------------
** JIT code that allocates in a loop makes the same site again and again: its stack is its one
** frame, and its Lua stack follows from the trace that runs. lk_site_capture remembers, per thread,
** the last such site (lk_self.site) and what it depended on: key, the return address (in JIT
** code) with the allocation function in bits 48 and up; vmstate, the trace that ran (0: no VM),
** read at vmp (in the VM's global_State, or a zero); gen, lk_hot_gen, while which vmp stays valid.
** lk_site_fast gives it back (in *site, returning 1) while all of that is unchanged (0: capture). */

static inline uintptr_t lk_site_key(int fn, uintptr_t ra) { return ra | (uintptr_t)fn << 48; }

static inline int lk_site_fast(int fn, uintptr_t ra, uint32_t *site)
{
  const lk_thread_state *t = &lk_self;
  *site = t->site.site;
  return t->site.key == lk_site_key(fn, ra) && t->site.gen == lk_hot_gen && *t->site.vmp == t->site.vmstate;
}

#endif
