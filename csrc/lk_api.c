/* ljleak tracker: the control API that `require "ljleak"` calls through the FFI (ljleak.h): contexts
** (tags and snapshot epochs), live-block queries, mid-run leak checks, and finalizer bookkeeping. */
#include "lk_api.h"
#include "lk_alloc.h"
#include "lk_ctx.h"
#include "lk_lock.h"
#include "lk_maps.h"
#include "lk_report.h"
#include "lk_scan.h"
#include "lk_stack.h"
#include "lk_state.h"
#include "lk_sys.h"
#include "lk_table.h"
#include "lk_thread.h"

#include <string.h>

/* -- Contexts and recording ------------------------------------------------- */

LK_EXPORT int ljleak_tracker_active(void) { return lk_on; }

LK_EXPORT uint32_t ljleak_ctx_make(uint32_t epoch, const char *tag, const char *note)
{
  return lk_ctx_make(epoch, tag, note);
}

LK_EXPORT void ljleak_ctx_set(uint32_t ctx)
{
  lk_ctx = ctx;
  lk_hot_stale();   /* the sites lk_site_fast remembers carry the old one */
}

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

/* -- Reports of live blocks -----------------------------------------------------
** Mid-run reports are raw reports (doc/raw-format.md) in tracker memory, read by the same reader
** as the exit report's file (lua/ljleak/raw.lua); Lua frees them with ljleak_raw_free. */

static volatile int lk_check_lock;   /* one mid-run report at a time: they share the stamps */

void lk_api_init(void)
{
  lk_lock_register(&lk_check_lock);
}

static int lk_epoch_in(uint32_t site, uint32_t lo, uint32_t hi)
{
  const lk_site *s = lk_site_get(site);
  uint32_t e = 0;
  lk_ctx_tag(s ? s->ctx : 0, &e, NULL);
  return e >= lo && e < hi;
}

/* How many blocks born in epochs [lo, hi) are still live; the addresses of the first CAP of them
** (in address order) into OUT. */
LK_EXPORT size_t ljleak_live_addrs(uint32_t lo, uint32_t hi, uintptr_t *out, size_t cap)
{
  lk_block *b;
  size_t n, i, count = 0;
  lk_busy++;
  n = lk_table_collect(&b, NULL, 0);
  for (i = 0; i < n; i++) {
    if (b[i].site == LK_SITE_INTERNAL || !lk_epoch_in(b[i].site, lo, hi)) continue;
    if (count < cap) out[count] = b[i].addr;
    count++;
  }
  if (b) lk_sysunmap(b, n * sizeof(lk_block));
  lk_busy--;
  return count;
}

LK_EXPORT uint64_t ljleak_live_blocks(uint32_t lo, uint32_t hi)
{
  return ljleak_live_addrs(lo, hi, NULL, 0);
}

/* A raw report of the blocks born in epochs [lo, hi) and still live (kind "live"), into *raw;
** returns its length. */
LK_EXPORT size_t ljleak_live(uint32_t lo, uint32_t hi, char **raw)
{
  lk_report_filter f = { LK_REPORT_LIVE, lo, hi };
  lk_result r;
  size_t len;
  memset(&r, 0, sizeof(r));
  lk_busy++;
  lk_spin_lock(&lk_check_lock);
  lk_maps_snapshot();  /* modules loaded since the last look: their frames */
  r.n = r.cap = lk_table_collect(&r.blocks, NULL, 0);
  len = lk_report_raw(&r, &f, raw);
  lk_result_free(&r);
  lk_spin_unlock(&lk_check_lock);
  lk_busy--;
  return len;
}

/* A leak check while the program runs: stop the other threads, classify every live block (the
** Lua state is open: its live objects are roots, freed ones are not), and report the blocks born
** in epochs [lo, hi) that are lost (definite, indirect, possible), as a raw report into *raw.
** The entry stub keeps the caller's registers and frame: this thread's stack is scanned from there
** up, and the scan runs on the tracker's own stack, so that none of its variables (block
** addresses) is taken for a root. */

LK_TLS lk_regs lk_check_regs LK_HIDDEN;
LK_CAPTURING_ENTRY(ljleak_check, lk_check_regs, lk_check_body)

typedef struct lk_check_args {
  lk_report_filter f;
  lk_scan_from from;
  char **raw;
  size_t len;
  uintptr_t *out;      /* ljleak_unheld: the addresses, up to cap */
  size_t cap;
} lk_check_args;

/* The blocks of R born in epochs [F->lo, F->hi) that the scan did not find reachable: their
** count, the first A->cap addresses into A->out. */
static size_t lk_unreached(const lk_result *r, lk_check_args *a)
{
  size_t i, n = 0;
  for (i = 0; i < r->n; i++) {
    const lk_block *b = &r->blocks[i];
    if (b->site == LK_SITE_INTERNAL || b->state == LK_REACHABLE || b->state == LK_GONE ||
        !lk_epoch_in(b->site, a->f.lo, a->f.hi))
      continue;
    if (n < a->cap) a->out[n] = b->addr;
    n++;
  }
  return n;
}

static void lk_check_scan(void *arg)
{
  lk_check_args *a = arg;
  lk_result r;
  lk_maps_snapshot();
  lk_maps_load();
  lk_set_on(LK_ON_GATE);
  lk_threads_park();
  lk_scan(&r, &a->from);
  lk_set_on(LK_ON_RECORD);
  lk_threads_unpark();
  if (a->raw) a->len = lk_report_raw(&r, &a->f, a->raw);
  else a->len = lk_unreached(&r, a);
  lk_result_free(&r);
}

static size_t lk_check_run(lk_check_args *a, uint32_t lo, uint32_t hi, int c_only)
{
  a->f.what = LK_REPORT_LOST;
  a->f.lo = lo;
  a->f.hi = hi;
  a->len = 0;
  a->from.sp = lk_check_regs.sp;
  a->from.regs = lk_check_regs.r;
  a->from.tid = -1;
  a->from.c_only = c_only;
  lk_busy++;
  lk_spin_lock(&lk_check_lock);  /* one check at a time: they share the tracker's stack */
  if (!lk_on_own_stack(lk_check_scan, a)) lk_check_scan(a);
  lk_spin_unlock(&lk_check_lock);
  lk_busy--;
  return a->len;
}

LK_HIDDEN LK_USED size_t lk_check_body(uint32_t lo, uint32_t hi, char **raw)
{
  lk_check_args a;
  a.raw = raw;
  *raw = NULL;
  return lk_check_run(&a, lo, hi, 0);
}

/* The same scan with C's roots only (lk_scan_from.c_only): how many blocks born in epochs
** [lo, hi) it does not find reachable, the first CAP of their addresses into OUT. A block it finds
** is not lost whatever Lua's collector would do: a check that needs no collection. */
LK_CAPTURING_ENTRY(ljleak_unheld, lk_check_regs, lk_unheld_body)

LK_HIDDEN LK_USED size_t lk_unheld_body(uint32_t lo, uint32_t hi, uintptr_t *out, size_t cap)
{
  lk_check_args a;
  a.raw = NULL;
  a.out = out;
  a.cap = out ? cap : 0;
  return lk_check_run(&a, lo, hi, 1);
}

/* The frames of a Lua stack (ljleak_here's), as a raw report holding only its lua lines. */
LK_EXPORT size_t ljleak_lua_raw(uint32_t id, char **raw)
{
  size_t len;
  lk_busy++;
  len = lk_report_lua(id, raw);
  lk_busy--;
  return len;
}

LK_EXPORT void ljleak_raw_free(char *raw)
{
  lk_report_free(raw);
}

/* -- Finalizers ------------------------------------------------------------------
** While an ffi.gc finalizer runs, a free() of memory the tracker never handed out (or already
** took back: a double free) is recorded and not passed on (lk_alloc.c). */

LK_EXPORT void ljleak_finalizer_enter(void) { lk_finalizer_enter(); }

LK_EXPORT int ljleak_finalizer_leave(uintptr_t *out, int cap) { return lk_finalizer_leave(out, cap); }
