/* ljleak tracker: the root scan that classifies every live block at exit, with Valgrind's
** meanings (definite, indirect, possible, reachable). Model: LSan's lsan_common.cpp. */
#include "lk_def.h"

#include <dlfcn.h>
#include <string.h>

typedef size_t (*lk_usable_f)(void *);

typedef struct lk_scanner {
  lk_block *b;
  size_t n;
  uintptr_t lo, hi;        /* address range covered by blocks */
  uint32_t *work;          /* worklist of block indices */
  size_t nwork;
  size_t roots_bytes;
  uint32_t leader;         /* indirect phase: the clique's leader */
  int phase;               /* 0: from roots, 1: from lost blocks */
  lk_usable_f usable;
} lk_scanner;

/* -- Block lookup ------------------------------------------------------- */

/* Index of the block holding address w, or -1; *start says whether w is its first byte. */
static long lk_find(const lk_scanner *s, uintptr_t w, int *start)
{
  size_t a = 0, z = s->n;
  const lk_block *b;
  if (w < s->lo || w >= s->hi) return -1;
  while (z - a > 1) {  /* last block with addr <= w */
    size_t m = (a + z) / 2;
    if (s->b[m].addr <= w) a = m; else z = m;
  }
  b = &s->b[a];
  if (w == b->addr) { *start = 1; return (long)a; }
  if (w < b->addr || w >= b->addr + b->size) return -1;
  /* glibc's bins point at the header of the next free chunk, which overlaps this block's last
  ** word: that is the allocator's bookkeeping, not an interior pointer of the program. */
  if (s->usable && w == b->addr + s->usable((void *)b->addr) - 8) return -1;
  *start = 0;
  return (long)a;
}

/* -- Flood fill --------------------------------------------------------- */

static void lk_hit(lk_scanner *s, uintptr_t w)
{
  int start = 0;
  long i = lk_find(s, w, &start);
  lk_block *b;
  if (i < 0) return;
  b = &s->b[i];
  if (s->phase == 0) {
    uint32_t st = start ? LK_REACHABLE : LK_POSSIBLE;
    if (b->state >= st) return;
    b->state = st;
  } else {
    if (b->state != LK_UNREACHED || (uint32_t)i == s->leader) return;
    b->state = LK_INDIRECT;
  }
  s->work[s->nwork++] = (uint32_t)i;
}

static void lk_scan_words(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  const uintptr_t *p = (const uintptr_t *)((lo + 7) & ~(uintptr_t)7);
  const uintptr_t *e = (const uintptr_t *)(hi & ~(uintptr_t)7);
  uintptr_t blo = s->lo, bhi = s->hi;
  for (; p < e; p++) {
    uintptr_t w = *p;
    if (w >= blo && w < bhi) lk_hit(s, w);
  }
}

static void lk_drain(lk_scanner *s)
{
  while (s->nwork) {
    const lk_block *b = &s->b[s->work[--s->nwork]];
    lk_scan_words(s, b->addr, b->addr + b->size);
  }
}

static void lk_root(uintptr_t lo, uintptr_t hi, void *ud)
{
  lk_scanner *s = ud;
  s->roots_bytes += hi - lo;
  lk_scan_words(s, lo, hi);
  lk_drain(s);
}

static void lk_root_checked(uintptr_t lo, uintptr_t hi, void *ud)
{
  lk_maps_readable(lo, hi, lk_root, ud);
}

/* A mapping the program made: whole, but LuaJIT's arena only through its chunks in use. */
static void lk_root_foreign(uintptr_t lo, uintptr_t hi, void *ud)
{
  lk_lua_arena_outside(lo, hi, lk_root, ud);
}

/* -- Roots -------------------------------------------------------------- */

static void lk_roots_modules(lk_scanner *s)
{
  int i, k, n = lk_module_count();
  for (i = 0; i < n; i++) {
    const lk_module *m = lk_module_get(i);
    if (m->self) continue;  /* the tracker's own tables would make everything reachable */
    for (k = 0; k < m->nw; k++) lk_root_checked(m->wlo[k], m->whi[k], s);
  }
}

/* Static TLS and the thread descriptor of the calling thread (pthread keys, DTV). */
static size_t lk_tls_size = 4096;

void lk_scan_init(void)  /* dlvsym may allocate: not at exit */
{
  typedef void (*info_f)(size_t *, size_t *);
  info_f info = (info_f)dlvsym(RTLD_DEFAULT, "_dl_get_tls_static_info", "GLIBC_PRIVATE");
  size_t align = 0;
  if (info) info(&lk_tls_size, &align);
}

static void lk_roots_tls(lk_scanner *s)
{
  uintptr_t tp;
  __asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
  lk_root_checked(tp - lk_tls_size, tp + 4096, s);
}

uintptr_t lk_scan_from;  /* a mid-run check: scan this thread's stack from there up */

static NOINLINE void lk_roots_own_stack(lk_scanner *s, uintptr_t hi)
{
  uintptr_t sp;
  __builtin_unwind_init();  /* callee-saved registers spill into this frame */
  __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
  if (lk_main_returned && lk_main_sp > sp && lk_main_sp < hi) sp = lk_main_sp;
  if (lk_scan_from > sp && lk_scan_from < hi) sp = lk_scan_from;
  lk_root_checked(sp, hi, s);
}

/* -- Classification ------------------------------------------------------ */

void lk_scan(lk_result *r)
{
  lk_scanner s;
  uintptr_t hi = 0;
  size_t i;
  memset(&s, 0, sizeof(s));
  memset(r, 0, sizeof(*r));
  s.n = lk_table_collect(&s.b);
  r->blocks = s.b;
  r->n = s.n;
  if (!s.n) return;
  s.lo = s.b[0].addr;
  for (i = 0; i < s.n; i++)
    if (s.b[i].addr + s.b[i].size > s.hi) s.hi = s.b[i].addr + s.b[i].size;
  if (s.hi == s.lo) s.hi++;  /* all zero-sized */
  s.work = lk_sysmap((2 * s.n + 1) * sizeof(uint32_t));
  r->work = s.work;
  s.usable = (lk_usable_f)lk_real_malloc_usable_size();
  if (!s.work) return;

  /* Blocks the dynamic linker made (DTV, dlopen bookkeeping) are its roots, as LSan says. */
  for (i = 0; i < s.n; i++) {
    const lk_site *site = lk_site_get(s.b[i].site);
    if (site && site->depth && lk_ip_in_ldso(site->ips[0])) {
      s.b[i].state = LK_REACHABLE;
      s.work[s.nwork++] = (uint32_t)i;
    }
  }
  lk_drain(&s);
  lk_roots_modules(&s);
  if (lk_lua_arena_foreach(lk_root, &s)) lk_maps_foreach_foreign(lk_root_foreign, &s);
  else lk_maps_foreach_foreign(lk_root, &s);
  lk_threads_foreach_stack(lk_root_checked, &s);
  if (lk_thread_self_stack(&hi)) lk_roots_own_stack(&s, hi);
  lk_roots_tls(&s);

  /* Lost blocks: the first of each group stays definite, what it holds becomes indirect. */
  s.phase = 1;
  for (i = 0; i < s.n; i++) {
    if (s.b[i].state != LK_UNREACHED) continue;
    s.leader = (uint32_t)i;
    lk_scan_words(&s, s.b[i].addr, s.b[i].addr + s.b[i].size);
    lk_drain(&s);
  }
  for (i = 0; i < s.n; i++)
    if (s.b[i].state == LK_UNREACHED) s.b[i].state = LK_DEFINITE;
  r->roots_bytes = s.roots_bytes;
}

void lk_result_free(lk_result *r)
{
  lk_sysunmap(r->blocks, (r->n ? r->n : 1) * sizeof(lk_block));
  lk_sysunmap(r->work, (2 * r->n + 1) * sizeof(uint32_t));
  r->blocks = NULL;
  r->work = NULL;
}
