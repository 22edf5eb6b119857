/* ljleak tracker: the control API that `require "ljleak"` calls through the FFI (ljleak.h): contexts
** (tags and snapshot epochs), live-block queries, mid-run leak checks, and finalizer bookkeeping. */
#include "lk_api.h"
#include "lk_alloc.h"
#include "lk_ctx.h"
#include "lk_lock.h"
#include "lk_luaread.h"
#include "lk_luavm.h"
#include "lk_maps.h"
#include "lk_scan.h"
#include "lk_stack.h"
#include "lk_state.h"
#include "lk_sys.h"
#include "lk_table.h"
#include "lk_thread.h"

#include <string.h>

/* -- Contexts and recording ------------------------------------------------- */

static volatile int lk_check_lock;

void lk_api_init(void)
{
  lk_lock_register(&lk_check_lock);
}

LK_EXPORT int ljleak_tracker_active(void) { return lk_on; }

LK_EXPORT uint32_t ljleak_ctx_make(uint32_t epoch, const char *tag, const char *note)
{
  return lk_ctx_make(epoch, tag, note);
}

LK_EXPORT void ljleak_ctx_set(uint32_t ctx) { lk_ctx = ctx; }

/* Stop (on != 0) or resume recording this thread's allocations: ljleak's own reporting work.
** Mappings made meanwhile are still the program's (LuaJIT's heap grows): lk_paused says so. */
LK_EXPORT void ljleak_pause(int on)
{
  if (on) {
    lk_busy++;
    lk_paused++;
  } else if (lk_paused > 0) {
    lk_busy--;
    lk_paused--;
  }
}

/* Attach a note to a live block ("finalizer detached at x.lua:3"): it moves to a site with the
** same stack whose context carries the note. Returns 0 if the block is not tracked. */
LK_EXPORT int ljleak_annotate(void *p, const char *note)
{
  uint64_t size;
  uint32_t site, epoch = 0, ctx;
  const lk_site *s;
  const char *tag;
  if (!p || !lk_on) return 0;
  lk_busy++;
  if (!lk_table_take(p, &size, &site)) { lk_busy--; return 0; }
  s = lk_site_get(site);
  tag = lk_ctx_tag(s ? s->ctx : 0, &epoch, NULL);
  ctx = lk_ctx_make(epoch, tag, note);
  lk_table_set(p, size, lk_site_with_ctx(site, ctx));
  lk_busy--;
  return 1;
}

/* -- Queries over live blocks ------------------------------------------------ */

/* Group (site, kind) -> blocks, bytes into out[] (cap entries); returns the number of groups,
** which may exceed cap (then call again with more room). */
typedef struct lk_grouper {
  ljleak_rec *out;
  int cap, n;
} lk_grouper;

static void lk_group(lk_grouper *g, uint32_t site, uint32_t kind, uint64_t bytes)
{
  int i;
  for (i = 0; i < g->n && i < g->cap; i++) {
    if (g->out[i].site == site && g->out[i].kind == kind) {
      g->out[i].blocks++;
      g->out[i].bytes += bytes;
      return;
    }
  }
  if (g->n < g->cap) {
    g->out[g->n].site = site;
    g->out[g->n].kind = kind;
    g->out[g->n].blocks = 1;
    g->out[g->n].bytes = bytes;
  }
  g->n++;
}

static int lk_epoch_in(uint32_t site, uint32_t lo, uint32_t hi)
{
  const lk_site *s = lk_site_get(site);
  uint32_t e = 0;
  lk_ctx_tag(s ? s->ctx : 0, &e, NULL);
  return e >= lo && e < hi;
}

/* Blocks born in epochs [lo, hi) and still live, grouped by site (kind 0). */
LK_EXPORT int ljleak_live(uint32_t lo, uint32_t hi, ljleak_rec *out, int cap)
{
  lk_grouper g = { out, cap, 0 };
  lk_block *b;
  size_t n, i;
  lk_busy++;
  n = lk_table_collect(&b, NULL);
  for (i = 0; i < n; i++)
    if (b[i].site != LK_SITE_INTERNAL && lk_epoch_in(b[i].site, lo, hi)) lk_group(&g, b[i].site, 0, b[i].size);
  if (b) lk_sysunmap(b, n * sizeof(lk_block));
  lk_busy--;
  return g.n;
}

/* A leak check while the program runs: stop the other threads, classify every live block (the
** Lua state is open: its live objects are roots, freed ones are not), and group the blocks born
** in epochs [lo, hi) that are lost (definite, indirect, possible). The entry stub keeps the
** caller's registers and frame: this thread's stack is scanned from there up, and the scan runs on
** the tracker's own stack, so that none of its variables (block addresses) is taken for a root. */

LK_TLS lk_regs lk_check_regs LK_HIDDEN;
LK_CAPTURING_ENTRY(ljleak_check, lk_check_regs, lk_check_body)

typedef struct lk_check_args {
  uint32_t lo, hi;
  lk_grouper g;
  lk_scan_from from;
} lk_check_args;

static void lk_check_scan(void *arg)
{
  lk_check_args *a = arg;
  lk_result r;
  size_t i;
  lk_maps_snapshot();
  lk_maps_load();
  __atomic_store_n(&lk_on, LK_ON_GATE, __ATOMIC_RELEASE);
  lk_threads_park();
  lk_scan(&r, &a->from);
  __atomic_store_n(&lk_on, LK_ON_RECORD, __ATOMIC_RELEASE);
  lk_threads_unpark();
  for (i = 0; i < r.n; i++) {
    uint32_t st = r.blocks[i].state;
    if (st == LK_REACHABLE || st == LK_GONE || r.blocks[i].site == LK_SITE_INTERNAL || !lk_epoch_in(r.blocks[i].site, a->lo, a->hi))
      continue;
    lk_group(&a->g, r.blocks[i].site, st, r.blocks[i].size);
  }
  lk_result_free(&r);
}

LK_HIDDEN LK_USED int lk_check_body(uint32_t lo, uint32_t hi, ljleak_rec *out, int cap)
{
  lk_check_args a;
  a.lo = lo;
  a.hi = hi;
  a.g.out = out;
  a.g.cap = cap;
  a.g.n = 0;
  a.from.sp = lk_check_regs.sp;
  a.from.regs = lk_check_regs.r;
  a.from.tid = -1;
  lk_busy++;
  lk_spin_lock(&lk_check_lock);  /* one check at a time: they share the tracker's stack */
  if (!lk_on_own_stack(lk_check_scan, &a)) lk_check_scan(&a);
  lk_spin_unlock(&lk_check_lock);
  lk_busy--;
  return a.g.n;
}

/* -- Describing sites to Lua ------------------------------------------------- */

LK_EXPORT int ljleak_site(uint32_t id, ljleak_site_info *out)
{
  const lk_site *s = lk_site_get(id);
  if (!s) return 0;
  out->fn = s->fn < LK_F__MAX ? lk_fnames[s->fn] : "malloc";
  out->depth = s->depth;
  out->lua = s->lua;
  out->ctx = s->ctx;
  out->ips = s->ips;
  return 1;
}

/* The loaded object holding ip: its index, load bias and path (NULL if none). */
LK_EXPORT const char *ljleak_module_of(uintptr_t ip, uintptr_t *bias)
{
  int m = lk_module_find(ip);
  if (m < 0) {
    lk_busy++;
    lk_maps_snapshot();  /* loaded since the last look */
    lk_busy--;
    m = lk_module_find(ip);
  }
  if (m < 0) return NULL;
  *bias = lk_module_get(m)->base;
  return lk_module_get(m)->path;
}

typedef struct { char *buf; size_t len, n; } lk_textbuf;

static void lk_text_add(lk_textbuf *t, const char *s)
{
  size_t l = strlen(s);
  if (t->n + l + 1 >= t->len) return;
  memcpy(t->buf + t->n, s, l);
  t->n += l;
}

static void lk_lua_line(int line, int flags, const char *name, const char *src, void *ud)
{
  lk_textbuf *t = ud;
  char num[16];
  int k = 15;
  unsigned v = line < 0 ? 1 : (unsigned)line;
  num[k] = 0;
  do { num[--k] = (char)('0' + v % 10); v /= 10; } while (v);
  if (line < 0) num[--k] = '-';
  lk_text_add(t, num + k);
  lk_text_add(t, flags & LK_LUA_APPROX ? "\t~\t" : "\t\t");
  lk_text_add(t, name);
  lk_text_add(t, "\t");
  lk_text_add(t, src);
  lk_text_add(t, "\n");
}

/* A Lua stack as text: one frame a line, "LINE\t[~]\tNAME\tSOURCE". Returns its length. */
LK_EXPORT int ljleak_lua_text(uint32_t id, char *buf, int len)
{
  lk_textbuf t = { buf, (size_t)len, 0 };
  if (len <= 0) return 0;
  lk_lua_frames(id, lk_lua_line, &t);
  buf[t.n < t.len ? t.n : t.len - 1] = 0;
  return (int)t.n;
}

/* Tag and note of a context, for reports made in the process. */
LK_EXPORT const char *ljleak_ctx_tag(uint32_t ctx, const char **note, uint32_t *epoch)
{
  return lk_ctx_tag(ctx, epoch, note);
}

/* -- Finalizers ------------------------------------------------------------------
** While an ffi.gc finalizer runs, a free() of memory the tracker never handed out (or already
** took back: a double free) is recorded and not passed on (lk_alloc.c). */

LK_EXPORT void ljleak_finalizer_enter(void) { lk_finalizer_enter(); }

LK_EXPORT int ljleak_finalizer_leave(uintptr_t *out, int cap) { return lk_finalizer_leave(out, cap); }
