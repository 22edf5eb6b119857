/* ljleak tracker: the root scan that classifies every live block, with Valgrind's meanings
** (definite, indirect, possible, reachable). Model: LSan's lsan_common.cpp. */
#include "lk_scan.h"
#include "lk_alloc.h"
#include "lk_luavm.h"
#include "lk_maps.h"
#include "lk_mmap.h"
#include "lk_stack.h"
#include "lk_sys.h"
#include "lk_thread.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <unistd.h>

typedef size_t (*lk_usable_f)(void *);

/* What held a block, for LJLEAK_EXPLAIN: a root (index into the root list) or another block. */
typedef struct lk_why {
  uintptr_t at;         /* address of the word that pointed to the block */
  int32_t block;        /* holding block, or -1 */
  int32_t root;         /* root index, or -1 */
} lk_why;

#define LK_MAXROOTS 4096
typedef struct lk_rootdesc {
  const char *what;     /* "stack of thread", "data of", ... */
  const char *name;     /* module path, or NULL */
  uintptr_t lo, hi;
  long num;             /* thread id, or -1 */
} lk_rootdesc;

typedef struct lk_scanner {
  lk_block *b;
  size_t n;
  uintptr_t lo, hi;        /* address range covered by blocks */
  uint32_t *work;          /* worklist of block indices */
  size_t nwork;
  size_t roots_bytes;
  uint32_t leader;         /* indirect phase: the clique's leader */
  int phase;               /* 0: from roots, 1: from lost blocks */
  int safe;                /* read through lk_safe_copy: some thread still runs */
  lk_usable_f usable;
  long cur_block;          /* the block being scanned, or -1 when a root is */
  lk_why *why;             /* per block, when explaining */
} lk_scanner;

static lk_rootdesc lk_roots[LK_MAXROOTS];
static int lk_nroots;

/* -- LJLEAK_EXPLAIN ------------------------------------------------------
** A list of block addresses (0x...), sizes (decimal) and kinds (reachable, possible, indirect,
** definite): for each block that matches, the scan says on stderr why it was classified as it
** was, LSan's log_pointers idea. */

#define LK_MAXEXPLAIN 16
enum { LK_EX_SIZE, LK_EX_ADDR, LK_EX_KIND };
static uintptr_t lk_explain[LK_MAXEXPLAIN];
static int lk_explain_what[LK_MAXEXPLAIN];
static int lk_nexplain;

static void lk_explain_init(void)
{
#define LK_NAME(name, text) text,
  static const char *const kinds[] = { LK_KINDS(LK_NAME) };
#undef LK_NAME
  const char *e = getenv(LK_ENV_EXPLAIN);
  char *end;
  while (e && *e && lk_nexplain < LK_MAXEXPLAIN) {
    int hex = e[0] == '0' && (e[1] == 'x' || e[1] == 'X'), k;
    unsigned long long v = strtoull(e, &end, hex ? 16 : 10);
    if (end == e) {
      for (k = 1; k <= LK_DEFINITE; k++) {
        size_t n = strlen(kinds[k]);
        if (strncmp(e, kinds[k], n) == 0) { v = (unsigned)k; end = (char *)e + n; hex = 2; break; }
      }
      if (end == e) break;
    }
    lk_explain[lk_nexplain] = (uintptr_t)v;
    lk_explain_what[lk_nexplain++] = hex == 2 ? LK_EX_KIND : hex ? LK_EX_ADDR : LK_EX_SIZE;
    e = end;
    while (*e == ',' || *e == ' ' || *e == '|') e++;
  }
}

static int lk_explained(const lk_block *b)
{
  int i;
  if (b->site == LK_SITE_INTERNAL) return 0;
  for (i = 0; i < lk_nexplain; i++) {
    uintptr_t x = lk_explain[i];
    int what = lk_explain_what[i];
    if (what == LK_EX_ADDR ? b->addr == x : what == LK_EX_SIZE ? b->size == x : b->state == x) return 1;
  }
  return 0;
}

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
  if (s->usable && !s->safe && w == b->addr + s->usable((void *)b->addr) - 8) return -1;
  if (s->safe && w + 8 >= b->addr + b->size && ((w + 16) & 15) == 0) return -1;
  *start = 0;
  return (long)a;
}

/* -- Flood fill --------------------------------------------------------- */

static void lk_hit(lk_scanner *s, uintptr_t w, uintptr_t at)
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
  if (s->why) {
    s->why[i].at = at;
    s->why[i].block = (int32_t)s->cur_block;
    s->why[i].root = s->cur_block < 0 ? lk_nroots - 1 : -1;
  }
  s->work[s->nwork++] = (uint32_t)i;
}

/* glibc (2.32 on) keeps its tcache and fastbin links "safe-linked": (address of the link >> 12)
** XOR the next free chunk. When a block is handed out again its first word still holds that value:
** garbage that can fall on a live block. A first word that demangles to a 16-byte aligned address
** among the blocks is such a stale link, not a pointer of the program (a real pointer demangles to
** an address outside them, but for about one chance in 16 x (2^35 / the heap's size)). */
static int lk_stale_link(const lk_scanner *s, uintptr_t at, uintptr_t w)
{
  uintptr_t d;
  if (s->cur_block < 0 || at != s->b[s->cur_block].addr) return 0;
  d = w ^ (at >> 12);
  return (d & 15) == 0 && d >= s->lo && d < s->hi;
}

static void lk_scan_direct(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  const uintptr_t *p = (const uintptr_t *)((lo + 7) & ~(uintptr_t)7);
  const uintptr_t *e = (const uintptr_t *)(hi & ~(uintptr_t)7);
  uintptr_t blo = s->lo, bhi = s->hi;
  for (; p < e; p++) {
    uintptr_t w = *p;
    if (w >= blo && w < bhi && !lk_stale_link(s, (uintptr_t)p, w)) lk_hit(s, w, (uintptr_t)p);
  }
}

/* The same through a copy: memory another thread may unmap meanwhile is never touched directly. */
static uintptr_t lk_bounce[8192];

static void lk_scan_copied(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  lo = (lo + 7) & ~(uintptr_t)7;
  hi &= ~(uintptr_t)7;
  while (lo < hi) {
    size_t want = hi - lo > sizeof(lk_bounce) ? sizeof(lk_bounce) : hi - lo, got, k;
    got = lk_safe_copy(lk_bounce, lo, want) & ~(size_t)7;
    for (k = 0; k < got / 8; k++) {
      uintptr_t w = lk_bounce[k];
      if (w >= s->lo && w < s->hi && !lk_stale_link(s, lo + 8 * k, w)) lk_hit(s, w, lo + 8 * k);
    }
    if (got < want) lo = ((lo + got) | 4095) + 1;  /* a hole: go on after it */
    else lo += got;
  }
}

static void lk_scan_words(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  if (s->safe) lk_scan_copied(s, lo, hi);
  else lk_scan_direct(s, lo, hi);
}

/* -- Resident pages only ----------------------------------------------------
** A huge mapping the program never touched (a MAP_NORESERVE reservation) holds only zeros: read
** only the pages that are in memory, or in swap (pagemap tells), never the rest. */

#define LK_BIG ((uintptr_t)1 << 20)
static int lk_pagemap_fd = -2;

static int lk_page_swapped(uintptr_t page)
{
  uint64_t e = 0;
  if (lk_pagemap_fd == -2) {
    struct sysinfo si;
    lk_pagemap_fd = -1;
    if (sysinfo(&si) == 0 && si.totalswap > 0)
      lk_pagemap_fd = (int)syscall(SYS_open, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  }
  if (lk_pagemap_fd < 0) return 0;
  if (syscall(SYS_pread64, lk_pagemap_fd, &e, 8, (page >> 12) * 8) != 8) return 1;  /* unknown: read it */
  return (e >> 62) & 1;
}

static void lk_scan_counted(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  s->roots_bytes += hi - lo;
  lk_scan_words(s, lo, hi);
}

static void lk_scan_resident(lk_scanner *s, uintptr_t lo, uintptr_t hi,
                             void (*scan)(lk_scanner *, uintptr_t, uintptr_t))
{
  unsigned char vec[LK_BIG / 4096];
  uintptr_t w;
  if (hi - lo < LK_BIG) { scan(s, lo, hi); return; }
  for (w = lo & ~(uintptr_t)4095; w < hi; w += LK_BIG) {
    uintptr_t we = w + LK_BIG < hi ? w + LK_BIG : hi, run = 0, p;
    size_t np = (we - w + 4095) / 4096, k;
    if (syscall(SYS_mincore, w, we - w, vec) != 0) { scan(s, w > lo ? w : lo, we); continue; }
    for (k = 0; k <= np; k++) {
      int in = k < np && ((vec[k] & 1) || lk_page_swapped(w + k * 4096));
      p = w + k * 4096;
      if (in && !run) run = p;
      if (!in && run) {
        scan(s, run > lo ? run : lo, p < we ? p : we);
        run = 0;
      }
    }
  }
}

static void lk_drain(lk_scanner *s)
{
  long saved = s->cur_block;
  while (s->nwork) {
    uint32_t i = s->work[--s->nwork];
    const lk_block *b = &s->b[i];
    s->cur_block = (long)i;
    lk_scan_resident(s, b->addr, b->addr + b->size, lk_scan_words);
  }
  s->cur_block = saved;
}

/* -- Roots -------------------------------------------------------------- */

static void lk_root_note(const char *what, const char *name, long num, uintptr_t lo, uintptr_t hi)
{
  lk_rootdesc *r = &lk_roots[lk_nroots < LK_MAXROOTS ? lk_nroots++ : LK_MAXROOTS - 1];
  r->what = what;
  r->name = name;
  r->num = num;
  r->lo = lo;
  r->hi = hi;
}

typedef struct lk_rootctx {
  lk_scanner *s;
  const char *what, *name;
  long num;
} lk_rootctx;

static void lk_root_range(uintptr_t lo, uintptr_t hi, void *ud)
{
  lk_rootctx *c = ud;
  lk_root_note(c->what, c->name, c->num, lo, hi);
  c->s->cur_block = -1;
  lk_scan_resident(c->s, lo, hi, lk_scan_counted);  /* roots_bytes: what was read */
  lk_drain(c->s);
}

static void lk_root_checked(uintptr_t lo, uintptr_t hi, void *ud)
{
  lk_maps_readable(lo, hi, lk_root_range, ud);
}

/* A mapping the program made: whole, but LuaJIT's arena only through its chunks in use. */
static void lk_root_foreign(uintptr_t lo, uintptr_t hi, void *ud)
{
  lk_lua_arena_outside(lo, hi, lk_root_range, ud);
}

static void lk_roots_modules(lk_scanner *s)
{
  int i, k, n = lk_module_count();
  for (i = 0; i < n; i++) {
    const lk_module *m = lk_module_get(i);
    lk_rootctx c = { s, "data of", m->path, -1 };
    if (m->self) continue;  /* the tracker's own tables would make everything reachable */
    for (k = 0; k < m->nw; k++) lk_root_checked(m->wlo[k], m->whi[k], &c);
  }
}

/* Static TLS and the thread descriptor of the calling thread (pthread keys, DTV). */
static size_t lk_tls_size = 4096;

void lk_scan_init(void)  /* dlvsym and getenv may allocate: not at exit */
{
  typedef void (*info_f)(size_t *, size_t *);
  info_f info = (info_f)dlvsym(RTLD_DEFAULT, "_dl_get_tls_static_info", "GLIBC_PRIVATE");
  size_t align = 0;
  if (info) info(&lk_tls_size, &align);
  lk_explain_init();
}

static void lk_roots_tls(lk_scanner *s)
{
  uintptr_t tp;
  lk_rootctx c = { s, "static TLS of the checking thread", NULL, -1 };
  __asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
  lk_root_checked(tp - lk_tls_size, tp + 4096, &c);
}

/* The checking thread: its stack from the frame that called into the tracker (exit, a check) up,
** and the callee-saved registers it had there. Nothing below: exit handling's frames and the
** tracker's own (the scanner runs on a stack of its own) may hold stale copies of pointers. */
static void lk_roots_caller(lk_scanner *s, const lk_scan_from *from)
{
  uintptr_t hi = 0;
  lk_rootctx c = { s, "stack of the checking thread", NULL, from->tid };
  if (from->regs) {
    lk_rootctx rc = { s, "registers of the checking thread", NULL, from->tid };
    lk_root_range((uintptr_t)from->regs, (uintptr_t)(from->regs + LK_NREGS), &rc);
  }
  if (!from->sp || !lk_thread_self_stack(&hi) || from->sp >= hi) return;
  lk_root_checked(from->sp, hi, &c);
}

/* -- Classification ------------------------------------------------------ */

static void lk_explain_report(const lk_scanner *s);

void lk_scan(lk_result *r, const lk_scan_from *from)
{
  static lk_scanner s;
  size_t i, want = 0;
  memset(&s, 0, sizeof(s));
  memset(r, 0, sizeof(*r));
  lk_nroots = 0;
  s.n = lk_table_collect(&s.b, &want);
  r->blocks = s.b;
  r->n = s.n;
  r->cap = s.n;
  if (want && !s.b) { r->nomem = want; return; }
  if (!s.n) return;
  s.lo = s.b[0].addr;
  for (i = 0; i < s.n; i++)
    if (s.b[i].addr + s.b[i].size > s.hi) s.hi = s.b[i].addr + s.b[i].size;
  if (s.hi == s.lo) s.hi++;  /* all zero-sized */
  s.work = lk_sysmap((2 * s.n + 1) * sizeof(uint32_t));
  r->work = s.work;
  if (!s.work) { r->nomem = s.n; return; }
  if (lk_nexplain) {
    s.why = lk_sysmap(s.n * sizeof(lk_why));
    for (i = 0; s.why && i < s.n; i++) s.why[i].block = s.why[i].root = -1;
  }
  s.usable = (lk_usable_f)lk_real_malloc_usable_size();
  s.safe = lk_threads_unstopped() > 0 && lk_safe_copy_available();
  s.cur_block = -1;

  /* Blocks the dynamic linker made (DTV, dlopen bookkeeping) are its roots, as LSan says. */
  lk_root_note("allocated by the dynamic linker", NULL, -1, 0, 0);
  for (i = 0; i < s.n; i++) {
    const lk_site *site = lk_site_get(s.b[i].site);
    if (site && site->depth && lk_ip_in_ldso(site->ips[0])) {
      s.b[i].state = LK_REACHABLE;
      if (s.why) { s.why[i].at = s.b[i].addr; s.why[i].root = 0; }
      s.work[s.nwork++] = (uint32_t)i;
    }
  }
  lk_drain(&s);
  lk_roots_modules(&s);
  {
    lk_rootctx lc = { &s, "LuaJIT's heap (a live Lua object)", NULL, -1 };
    lk_rootctx fc = { &s, "memory the program mapped", NULL, -1 };
    if (lk_lua_arena_foreach(lk_root_range, &lc)) lk_maps_foreach_foreign(lk_root_foreign, &fc);
    else lk_maps_foreach_foreign(lk_root_range, &fc);
  }
  {
    lk_rootctx tc = { &s, "stack of thread", NULL, -1 };
    lk_threads_foreach_stack(lk_root_checked, &tc, &tc.num);
  }
  if (from) lk_roots_caller(&s, from);
  lk_roots_tls(&s);

  /* Lost blocks: the first of each group stays definite, what it holds becomes indirect. */
  s.phase = 1;
  for (i = 0; i < s.n; i++) {
    if (s.b[i].state != LK_UNREACHED) continue;
    s.leader = (uint32_t)i;
    s.cur_block = (long)i;
    lk_scan_resident(&s, s.b[i].addr, s.b[i].addr + s.b[i].size, lk_scan_words);
    lk_drain(&s);
  }
  for (i = 0; i < s.n; i++)
    if (s.b[i].state == LK_UNREACHED) s.b[i].state = LK_DEFINITE;
  /* A thread that ran on may have freed blocks meanwhile: those are not leaks. */
  if (s.safe) {
    for (i = 0; i < s.n; i++)
      if (s.b[i].state != LK_REACHABLE && !lk_table_still(&s.b[i])) s.b[i].state = LK_GONE;
  }
  r->roots_bytes = s.roots_bytes;
  r->unsafe = lk_threads_unstopped() > 0 && !s.safe;
  if (s.why) {
    lk_explain_report(&s);
    lk_sysunmap(s.why, s.n * sizeof(lk_why));
  }
}

void lk_result_free(lk_result *r)
{
  if (r->blocks) lk_sysunmap(r->blocks, r->cap * sizeof(lk_block));
  if (r->work) lk_sysunmap(r->work, (2 * r->cap + 1) * sizeof(uint32_t));
  r->blocks = NULL;
  r->work = NULL;
}

/* -- Explaining ------------------------------------------------------------- */

static const char *const lk_state_names[] = {
  "unreached", "indirectly lost", "possibly lost", "reachable", "definitely lost", "freed during the check"
};

static void lk_err(const char *s) { if (write(2, s, strlen(s)) < 0) return; }

static void lk_err_hex(uintptr_t v)
{
  char t[20];
  int i = 19;
  t[i] = 0;
  do { t[--i] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
  t[--i] = 'x';
  t[--i] = '0';
  lk_err(t + i);
}

static void lk_err_dec(uint64_t v)
{
  char t[24];
  int i = 23;
  t[i] = 0;
  do { t[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  lk_err(t + i);
}

static void lk_err_block(const lk_block *b)
{
  lk_err("block ");
  lk_err_hex(b->addr);
  lk_err(" (");
  lk_err_dec(b->size);
  lk_err(" bytes)");
}

static void lk_explain_report(const lk_scanner *s)
{
  size_t i;
  for (i = 0; i < s->n; i++) {
    const lk_block *b = &s->b[i];
    long cur = (long)i;
    int depth;
    if (!lk_explained(b)) continue;
    lk_err("ljleak: LJLEAK_EXPLAIN: ");
    lk_err_block(b);
    lk_err(" is ");
    lk_err(lk_state_names[b->state <= LK_GONE ? b->state : 0]);
    if (b->state == LK_DEFINITE) lk_err(": no pointer to it in any root or reachable block");
    lk_err("\n");
    for (depth = 0; depth < 64 && cur >= 0 && s->why[cur].at; depth++) {
      const lk_why *w = &s->why[cur];
      lk_err("    held by a pointer");
      if (s->b[cur].state == LK_POSSIBLE) lk_err(" into its interior");
      lk_err(" at ");
      lk_err_hex(w->at);
      if (w->block >= 0) {
        lk_err(" inside ");
        lk_err_block(&s->b[w->block]);
        lk_err(", which is ");
        lk_err(lk_state_names[s->b[w->block].state]);
        lk_err("\n");
        cur = w->block;
      } else {
        const lk_rootdesc *r = w->root >= 0 ? &lk_roots[w->root] : NULL;
        lk_err(" in ");
        lk_err(r ? r->what : "a root");
        if (r && r->name) { lk_err(" "); lk_err(r->name); }
        if (r && r->num > 0) { lk_err(" "); lk_err_dec((uint64_t)r->num); }
        if (r && r->hi > r->lo) { lk_err(" [+"); lk_err_hex(w->at - r->lo); lk_err("]"); }
        lk_err("\n");
        cur = -1;
      }
    }
  }
}
