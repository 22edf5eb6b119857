/* ljleak tracker: call-stack capture (libunwind, loaded privately) and site interning.
** A site is (allocation function, context id, return addresses); each gets a small id. */
#include "lk_stack.h"
#include "lk_ctx.h"
#include "lk_lock.h"
#include "lk_luavm.h"
#include "lk_maps.h"
#include "lk_mmap.h"
#include "lk_sys.h"
#include "lk_unwind.h"

#include <dlfcn.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* -- Stack capture -------------------------------------------------------
** lk_unwind.c steps nearly every frame itself. libunwind is loaded only for a stack that it
** cannot step (or for every stack with LJLEAK_UNWIND=libunwind): loading it costs a short process
** more than all its unwinds (two libraries, a 256 KiB cache per thread, a signal mask set around
** each new frame). It is dlopen'ed RTLD_LOCAL: linked normally it would export backtrace() and
** _Unwind_* to the whole process and take over LuaJIT's exception unwinding. It stops safely at
** JIT code (no unwind info there), where libgcc's unwinder aborts. */

typedef int (*lk_unw_backtrace_f)(void **, int);
static lk_unw_backtrace_f lk_unw_backtrace;
static int lk_unw_only;             /* LJLEAK_UNWIND=libunwind */
static volatile int lk_unw_tried;   /* libunwind: 1 loading, 2 loaded or refused */
static int lk_depth = LK_DEPTH_DEFAULT;
static volatile int lk_site_lock;
static lk_arena lk_sites;
static uint64_t lk_nsites, lk_max_sites;  /* sites made; LJLEAK_MAX_SITES (0: as many as fit) */

static void lk_libunwind_load(void)
{
  void *h;
  int idle = 0;
  if (!__atomic_compare_exchange_n(&lk_unw_tried, &idle, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return;
  h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
  if (h) {
    typedef int (*policy_f)(void *, int);
    typedef int (*size_f)(void *, size_t, int);
    void **as = dlsym(h, "_ULx86_64_local_addr_space");
    policy_f pol = (policy_f)dlsym(h, "_ULx86_64_set_caching_policy");
    size_f csz = (size_f)dlsym(h, "_ULx86_64_set_cache_size");
    if (as && pol) pol(*as, 2 /* UNW_CACHE_PER_THREAD */);
    if (as && csz) csz(*as, 1024, 0);
    __atomic_store_n(&lk_unw_backtrace, (lk_unw_backtrace_f)dlsym(h, "unw_backtrace"), __ATOMIC_RELEASE);
  }
  __atomic_store_n(&lk_unw_tried, 2, __ATOMIC_RELEASE);
}

void lk_stack_init(void)
{
  const char *e;
  lk_lock_register(&lk_site_lock);
  lk_unw_init();
  if ((e = getenv(LK_ENV_MAX_SITES)) && *e) lk_max_sites = strtoull(e, NULL, 10);
  e = getenv(LK_ENV_DEPTH);
  lk_sites.used = 8 * (LK_SITE_INTERNAL + 1);  /* ids 0 and 1 are reserved */
  lk_sites.max = ((size_t)LK_ARENA_CHUNKS << LK_CHUNK_BITS) - 8;  /* and the last: lk_table.c's mark */
  if (e && *e) {
    int d = atoi(e);
    lk_depth = d < 1 ? 1 : d > LK_MAXDEPTH ? LK_MAXDEPTH : d;
  }
  e = getenv(LK_ENV_UNWIND);
  lk_unw_only = e && strcmp(e, "libunwind") == 0;
  if (lk_unw_only) lk_libunwind_load();
}

/* -- Interning -----------------------------------------------------------
** Sites live in a growing arena (lk_sys.c); a site id is its offset / 8. Lookup is lock-free
** (chains are only ever prepended with release stores); insertion takes one spinlock. When the
** arena is full (2^28 ids, or no memory), new stacks share one "not recorded" site. */

/* The chains' heads: a table that starts small and grows 16-fold while there are more sites than
** heads (a short process touches a few pages, not a few hundred of a 4 MiB table). Growing
** re-links every site into the new table under the lock, then publishes it; a lookup that was
** in the old one may miss (a chain it follows may lead into the new table: chains stay acyclic)
** and then finds the site under the lock. Old tables stay mapped. */
#define LK_BUCKETS_FIRST ((uint32_t)1 << 12)
#define LK_BUCKETS_MAX ((uint32_t)1 << 20)
typedef struct lk_heads {
  uint32_t mask;
  uint32_t head[];
} lk_heads;

#define LK_NAME(name, text) text,
const char *const lk_fnames[LK_F__MAX] = { LK_ALLOC_FNS(LK_NAME) };
#undef LK_NAME

static lk_heads *lk_buckets;
static LK_TLS uint32_t lk_memo_id;
static LK_TLS uint32_t lk_memo_hash;
volatile uint64_t lk_sites_dropped;   /* allocations whose stack could not be kept */


const lk_site *lk_site_get(uint32_t id)
{
  return id > LK_SITE_INTERNAL ? (const lk_site *)lk_arena_at(&lk_sites, id) : NULL;
}

/* Stamp site ID as written by report SERIAL; 1 if it was already (or is not a real site). */
int lk_site_stamp(uint32_t id, uint32_t serial)
{
  lk_site *s = id > LK_SITE_INTERNAL ? (lk_site *)lk_arena_at(&lk_sites, id) : NULL;
  if (!s || s->stamp == serial) return 1;
  s->stamp = serial;
  return 0;
}

static inline uint32_t lk_hash(const uintptr_t *ips, int n, int fn, uint32_t ctx, uint32_t lua)
{
  uint64_t h = (0x9e3779b97f4a7c15ull ^ ((uint64_t)fn << 32) ^ ctx) + ((uint64_t)lua << 40);
  int i;
  for (i = 0; i < n; i++) {
    h ^= ips[i];
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  return (uint32_t)h ^ (uint32_t)(h >> 32);
}

static inline int lk_site_eq(const lk_site *s, uint32_t h, const uintptr_t *ips, int n, int fn,
                             uint32_t ctx, uint32_t lua)
{
  int i;
  if (s->hash != h || s->depth != n || s->fn != fn || s->ctx != ctx || s->lua != lua) return 0;
  for (i = 0; i < n; i++)  /* short: a call to memcmp costs more */
    if (s->ips[i] != ips[i]) return 0;
  return 1;
}

/* Under lk_site_lock. */
static void lk_heads_grow(void)
{
  lk_heads *t = lk_buckets, *g;
  uint32_t size = t ? (t->mask + 1) * 16 : LK_BUCKETS_FIRST, i, id, next;
  if (size > LK_BUCKETS_MAX) size = LK_BUCKETS_MAX;
  g = lk_sysmap(sizeof(lk_heads) + size * sizeof(uint32_t));
  if (!g) return;  /* the old one goes on */
  g->mask = size - 1;
  for (i = 0; t && i <= t->mask; i++) {
    for (id = t->head[i]; id; id = next) {
      lk_site *s = (lk_site *)lk_arena_at(&lk_sites, id);
      next = s->next;
      s->next = g->head[s->hash & g->mask];
      g->head[s->hash & g->mask] = id;
    }
  }
  __atomic_store_n(&lk_buckets, g, __ATOMIC_RELEASE);
}

static NOINLINE uint32_t lk_site_insert(uint32_t h, const uintptr_t *ips, int n, int fn,
                                        uint32_t ctx, uint32_t lua)
{
  uint32_t id, *bucket;
  lk_site *s;
  lk_spin_lock(&lk_site_lock);
  if (!lk_buckets || (lk_nsites >= (uint64_t)lk_buckets->mask + 1 && lk_buckets->mask + 1 < LK_BUCKETS_MAX))
    lk_heads_grow();
  if (!lk_buckets) { id = 0; goto done; }
  bucket = &lk_buckets->head[h & lk_buckets->mask];
  for (id = *bucket; id; id = s->next) {  /* someone may have inserted it meanwhile */
    s = (lk_site *)lk_arena_at(&lk_sites, id);
    if (lk_site_eq(s, h, ips, n, fn, ctx, lua)) goto done;
  }
  s = lk_max_sites && lk_nsites >= lk_max_sites ? NULL
    : lk_arena_alloc(&lk_sites, sizeof(lk_site) + n * sizeof(uintptr_t), &id);
  if (!s) { id = 0; goto done; }
  lk_nsites++;
  s->hash = h;
  s->depth = (uint16_t)n;
  s->fn = (uint8_t)fn;
  s->ctx = ctx;
  s->lua = lua;
  memcpy(s->ips, ips, n * sizeof(uintptr_t));
  s->next = *bucket;
  __atomic_store_n(bucket, id, __ATOMIC_RELEASE);
done:
  lk_spin_unlock(&lk_site_lock);
  if (!id) __atomic_fetch_add(&lk_sites_dropped, 1, __ATOMIC_RELAXED);
  return id;
}

static uint32_t lk_site_intern(const uintptr_t *ips, int n, int fn, uint32_t ctx, uint32_t lua)
{
  uint32_t h = lk_hash(ips, n, fn, ctx, lua), id, steps = 0;
  const lk_site *s;
  const lk_heads *t;
  if (h == lk_memo_hash && (s = lk_site_get(lk_memo_id)) && lk_site_eq(s, h, ips, n, fn, ctx, lua))
    return lk_memo_id;
  t = __atomic_load_n(&lk_buckets, __ATOMIC_ACQUIRE);
  if (LIKELY(t != NULL)) {
    for (id = __atomic_load_n(&t->head[h & t->mask], __ATOMIC_ACQUIRE); id && ++steps < (1u << 16);
         id = s->next) {  /* (bounded: a walk during a growth; the insert looks again) */
      s = (const lk_site *)lk_arena_at(&lk_sites, id);
      if (lk_site_eq(s, h, ips, n, fn, ctx, lua)) goto found;
    }
  }
  id = lk_site_insert(h, ips, n, fn, ctx, lua);
found:
  lk_memo_hash = h;
  lk_memo_id = id;
  return id;
}

/* Called from JIT code (LuaJIT's machine code lives in mappings the program made)? Then no
** unwinder can go further than that one frame, so do not ask one. One cached range per thread. */
static LK_TLS uintptr_t lk_jit_lo, lk_jit_hi;
static LK_TLS unsigned lk_jit_seen;   /* lk_hot_gen when that range was found */

static inline int lk_ip_in_jit(uintptr_t ip, unsigned gen)
{
  uintptr_t lo, hi;
  if (ip >= lk_jit_lo && ip < lk_jit_hi && lk_jit_seen == gen) return 1;
  if (!lk_foreign_find(ip, &lo, &hi)) return 0;
  lk_jit_seen = gen;
  lk_jit_lo = lo;
  lk_jit_hi = hi;
  return 1;
}

/* -- Unwinding and fork --------------------------------------------------
** libunwind takes mutexes of its own while it steps (its memory pools): a thread that forks
** while another is inside it gives a child whose first unwind waits forever. Before a fork the
** forking thread waits until no thread is inside libunwind, and keeps new ones out until the
** fork is done (in parent and child). A thread that forks from inside the unwinder (a signal
** handler) does not wait for itself. */

static volatile int lk_unw_active;    /* threads inside libunwind */
static volatile int lk_unw_forking;   /* a fork is being prepared */
static LK_TLS int lk_unw_mine;        /* this thread is inside libunwind */

static int lk_unwind(void **buf, int depth)
{
  int n;
  for (;;) {
    __atomic_add_fetch(&lk_unw_active, 1, __ATOMIC_SEQ_CST);
    if (LIKELY(!__atomic_load_n(&lk_unw_forking, __ATOMIC_SEQ_CST))) break;
    __atomic_sub_fetch(&lk_unw_active, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&lk_unw_forking, __ATOMIC_ACQUIRE)) sched_yield();
  }
  lk_unw_mine = 1;
  n = lk_unw_backtrace(buf, depth);
  lk_unw_mine = 0;
  __atomic_sub_fetch(&lk_unw_active, 1, __ATOMIC_RELEASE);
  return n;
}

/* A stack lk_unwind.c could not step past frame N of BUF: libunwind's, loaded now unless one of
** those frames is the dynamic linker's (no dlopen from inside dlopen); else those N frames. */
static NOINLINE int lk_unwind_hard(void **buf, int n, int depth)
{
  int i;
  if (__atomic_load_n(&lk_unw_tried, __ATOMIC_ACQUIRE) != 2) {
    for (i = 0; i < n && !lk_ip_in_ldso((uintptr_t)buf[i]); i++) ;
    if (i == n) lk_libunwind_load();
  }
  if (__atomic_load_n(&lk_unw_backtrace, __ATOMIC_ACQUIRE)) return lk_unwind(buf, depth);
  return n;
}

void lk_stack_fork_prepare(void)
{
  int self = lk_unw_mine;
  __atomic_store_n(&lk_unw_forking, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&lk_unw_active, __ATOMIC_SEQ_CST) > self) sched_yield();
}

void lk_stack_fork_done(int child)
{
  if (child) lk_unw_active = lk_unw_mine;
  __atomic_store_n(&lk_unw_forking, 0, __ATOMIC_RELEASE);
}
static const volatile int32_t lk_no_vmstate;   /* what lk_self.site.vmp points to without a VM */

/* Capture the caller's stack (frames inside the tracker dropped) and intern it.
** Returns 0 only when the site arena is exhausted. */
uint32_t lk_site_capture(int fn, uintptr_t ra)
{
  void *buf[LK_MAXDEPTH + 8];
  uintptr_t ips[LK_MAXDEPTH];
  int n = 0, i = 0, k = 0, hard;
  unsigned gen = __atomic_load_n(&lk_hot_gen, __ATOMIC_ACQUIRE);  /* before what it guards */
  int32_t vmstate = lk_lua_vmstate();
  uint32_t lua = lk_lua_capture(), ctx = lk_ctx, id;
  if (lk_ip_in_jit(ra, gen)) {
    ips[0] = ra;
    id = lk_site_intern(ips, 1, fn, ctx, lua);
    if (id > LK_SITE_INTERNAL && vmstate >= 0) {  /* the same again for this caller: lk_site_fast */
      lk_self.site.key = lk_site_key(fn, ra);
      lk_self.site.vmstate = vmstate;
      lk_self.site.vmp = lk_vm_state ? lk_vm_state : &lk_no_vmstate;
      lk_self.site.gen = gen;
      lk_self.site.site = id;
    }
    return id;
  }
  hard = lk_unw_only;
  if (LIKELY(!hard)) n = lk_unw_trace((uintptr_t *)buf, lk_depth + 6, &hard);
  if (UNLIKELY(hard)) n = lk_unwind_hard(buf, n, lk_depth + 6);
  if (!n) {
    buf[0] = (void *)ra;  /* only the allocation's caller: better than nothing */
    n = 1;
  }
  for (; i < n && k < lk_depth; i++)  /* the tracker's frames (hooks, main wrapper) are noise */
    if (!lk_ip_in_self((uintptr_t)buf[i])) ips[k++] = (uintptr_t)buf[i];
  return lk_site_intern(ips, k, fn, ctx, lua);
}

uint32_t lk_site_with_ctx(uint32_t id, uint32_t ctx)
{
  const lk_site *s = lk_site_get(id);
  if (!s) return id;
  return lk_site_intern(s->ips, s->depth, s->fn, ctx, s->lua);
}


