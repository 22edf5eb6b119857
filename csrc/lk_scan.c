/* ljleak tracker: the root scan. The roots of the process (loaded objects' data, LuaJIT's heap,
** thread stacks and registers, TLS) given to the classifier (lk_classify.c); LJLEAK_EXPLAIN. */
#include "lk_scan.h"
#include "lk_classify.h"
#include "lk_alloc.h"
#include "lk_luavm.h"
#include "lk_maps.h"
#include "lk_mmap.h"
#include "lk_stack.h"
#include "lk_sys.h"
#include "lk_thread.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LK_MAXROOTS 4096
typedef struct lk_rootdesc {
  const char *what;     /* "stack of thread", "data of", ... */
  const char *name;     /* module path, or NULL */
  uintptr_t lo, hi;
  long num;             /* thread id, or -1 */
} lk_rootdesc;

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
  c->s->root = lk_nroots - 1;
  lk_classify_root(c->s, lo, hi);
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

static uint64_t lk_now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void lk_scan_blocks(lk_result *r, const lk_scan_from *from, int indexed);

/* With every other thread stopped, the table holds the blocks' indexes while they are classified
** (lk_table_nearest), and gets its own content back after. */
void lk_scan(lk_result *r, const lk_scan_from *from)
{
  uint64_t t0 = lk_now_us();
  int indexed = lk_threads_unstopped() == 0;
  lk_scan_blocks(r, from, indexed);
  if (indexed && r->blocks) lk_table_restore(r->blocks, r->n);
  r->scan_us = lk_now_us() - t0;
}

static void lk_scan_blocks(lk_result *r, const lk_scan_from *from, int indexed)
{
  static lk_scanner s;
  size_t i, want = 0, n;
  lk_block *blocks;
  lk_why *why = NULL;
  uint32_t *work;
  memset(r, 0, sizeof(*r));
  lk_nroots = 0;
  n = lk_table_collect(&blocks, &want, indexed);
  r->blocks = blocks;
  r->n = n;
  r->cap = n;
  if (want && !blocks) { r->nomem = want; return; }
  if (!n) return;
  work = lk_sysmap((3 * n + 1) * sizeof(uint32_t));  /* the worklist, then the owners */
  r->work = work;
  if (!work) { r->nomem = n; return; }
  r->owner = work + 2 * n + 1;
  if (lk_nexplain && !(from && from->c_only)) {
    why = lk_sysmap(n * sizeof(lk_why));
    for (i = 0; why && i < n; i++) why[i].block = why[i].root = -1;
  }
  lk_classify_begin(&s, blocks, n, work, lk_threads_unstopped() > 0 && lk_safe_copy_available(),
                    (lk_usable_f)lk_real_malloc_usable_size(), why);
  s.indexed = indexed;
  s.owner = r->owner;
  /* Blocks the dynamic linker made (DTV, dlopen bookkeeping) are its roots, as LSan says. */
  lk_root_note("allocated by the dynamic linker", NULL, -1, 0, 0);
  s.root = 0;
  for (i = 0; i < n; i++) {
    const lk_site *site = lk_site_get(blocks[i].site);
    if (site && site->depth && lk_ip_in_ldso(site->ips[0])) lk_classify_held(&s, i);
  }
  lk_roots_modules(&s);
  if (!from || !from->c_only) {
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
  lk_classify_finish(&s);
  lk_classify_end(&s);
  r->roots_bytes = s.roots_bytes;
  r->unsafe = lk_threads_unstopped() > 0 && !s.safe;
  if (why) {
    lk_explain_report(&s);
    lk_sysunmap(why, n * sizeof(lk_why));
  }
}

void lk_result_free(lk_result *r)
{
  if (r->blocks) lk_sysunmap(r->blocks, r->cap * sizeof(lk_block));
  if (r->work) lk_sysunmap(r->work, (3 * r->cap + 1) * sizeof(uint32_t));
  r->blocks = NULL;
  r->work = NULL;
  r->owner = NULL;
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
