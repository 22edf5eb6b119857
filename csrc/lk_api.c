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

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* -- Contexts and recording ------------------------------------------------- */

LK_EXPORT int ljleak_tracker_active(void) { return lk_on; }

LK_EXPORT uint32_t ljleak_ctx_make(uint32_t epoch, const char *tag, const char *note)
{
  return lk_ctx_make(epoch, tag, note);
}

LK_EXPORT void ljleak_ctx_set(uint32_t ctx)
{
  uint32_t epoch = 0;
  lk_ctx_tag(ctx, &epoch, NULL);
  lk_table_epoch_raise(epoch);   /* before the sites carry it: their pages get stamped with it */
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

typedef int (*lk_epoll_wait_f)(int, struct epoll_event *, int, int);
static lk_epoll_wait_f lk_real_epoll_wait;

void lk_api_init(void)
{
  lk_lock_register(&lk_check_lock);
  lk_real_epoll_wait = (lk_epoll_wait_f)dlsym(RTLD_NEXT, "epoll_wait");
}

static int lk_epoch_in(uint32_t site, uint32_t lo, uint32_t hi)
{
  const lk_site *s = lk_site_get(site);
  uint32_t e = 0;
  lk_ctx_tag(s ? s->ctx : 0, &e, NULL);
  return e >= lo && e < hi;
}

typedef struct lk_live_args {
  uint32_t lo, hi;
  uintptr_t *out;
  size_t cap, count;
} lk_live_args;

static void lk_live_add(uintptr_t addr, uint64_t size, uint32_t site, void *ud)
{
  lk_live_args *a = ud;
  (void)size;
  if (site == LK_SITE_INTERNAL || !lk_epoch_in(site, a->lo, a->hi)) return;
  if (a->count < a->cap) a->out[a->count] = addr;
  a->count++;
}

/* How many blocks born in epochs [lo, hi) are still live; the addresses of the first CAP of them
** (in no particular order) into OUT. The table is walked in place (no list of every live block:
** a busted suite asks after each test, whatever its heap holds), in the pages of slots where
** blocks were recorded since LO only (lk_table.h's stamps): the cost follows the test, not the heap. */
LK_EXPORT size_t ljleak_live_addrs(uint32_t lo, uint32_t hi, uintptr_t *out, size_t cap)
{
  lk_live_args a = { lo, hi, out, cap, 0 };
  lk_busy++;
  lk_table_each_since(lo, lk_live_add, &a);
  lk_busy--;
  return a.count;
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

/* -- Growth -----------------------------------------------------------------------
** ljleak.stable counts live blocks per site after each iteration: the table walked once, the
** counts summed in the caller's array used as an open-addressing hash by site id (no report, no
** memory). The sites that grow are then reported once (ljleak_live_sites). */

typedef struct lk_site_sum {
  ljleak_live_count *out;
  uint32_t mask, n, full;
} lk_site_sum;

/* A site's stack without its context (epoch, tag): the same line in every iteration. */
static uint64_t lk_stack_key(const lk_site *s)
{
  uint64_t h = 0xcbf29ce484222325ull ^ ((uint64_t)s->fn << 56) ^ ((uint64_t)s->depth << 40) ^ s->lua;
  int i;
  for (i = 0; i < s->depth; i++) {
    h ^= s->ips[i];
    h *= 0x100000001b3ull;
    h ^= h >> 29;
  }
  return h ? h : 1;
}

static void lk_site_add(uintptr_t addr, uint64_t size, uint32_t site, void *ud)
{
  lk_site_sum *a = ud;
  uint32_t i = (site * 0x9e3779b1u) & a->mask;
  (void)addr;
  if (site <= LK_SITE_INTERNAL) return;   /* not recorded, or ljleak's own */
  while (a->out[i].site && a->out[i].site != site) i = (i + 1) & a->mask;
  if (!a->out[i].site) {
    const lk_site *s = lk_site_get(site);
    if (!s) return;
    if (4 * (a->n + 1) > 3 * (a->mask + 1)) { a->full = 1; return; }
    a->n++;
    a->out[i].site = site;
    lk_ctx_tag(s->ctx, &a->out[i].epoch, NULL);
    a->out[i].stack = lk_stack_key(s);
  }
  a->out[i].blocks++;
  a->out[i].bytes += size;
}

/* Live blocks and bytes per site whose epoch is in [lo, hi), into out (cap: a power of two);
** returns how many sites, or -1 when out is too small (call again with twice the room). */
LK_EXPORT int ljleak_site_live(uint32_t lo, uint32_t hi, ljleak_live_count *out, int cap)
{
  lk_site_sum a;
  uint32_t i, k = 0;
  if (cap < 4 || (cap & (cap - 1))) return -1;
  memset(out, 0, (size_t)cap * sizeof(*out));
  a.out = out;
  a.mask = (uint32_t)cap - 1;
  a.n = a.full = 0;
  lk_busy++;
  lk_table_each_since(lo, lk_site_add, &a);
  lk_busy--;
  if (a.full) return -1;
  for (i = 0; i <= a.mask; i++)
    if (out[i].site && out[i].epoch >= lo && out[i].epoch < hi) out[k++] = out[i];
  memset(out + k, 0, (size_t)(cap - k) * sizeof(*out));
  return (int)k;
}

/* A raw report (kind "live") of the live blocks of the N sites given, into *raw; its length. */
LK_EXPORT size_t ljleak_live_sites(const uint32_t *sites, int n, char **raw)
{
  lk_report_filter f = { LK_REPORT_LIVE, 0, UINT32_MAX };
  lk_result r;
  size_t len, i, k = 0;
  int j;
  memset(&r, 0, sizeof(r));
  lk_busy++;
  lk_spin_lock(&lk_check_lock);
  lk_maps_snapshot();
  r.n = r.cap = lk_table_collect(&r.blocks, NULL, 0);
  for (i = 0; i < r.n; i++)
    for (j = 0; j < n; j++)
      if (r.blocks[i].site == sites[j]) { r.blocks[k++] = r.blocks[i]; break; }
  r.n = k;
  len = lk_report_raw(&r, &f, raw);
  lk_result_free(&r);
  lk_spin_unlock(&lk_check_lock);
  lk_busy--;
  return len;
}

/* What the process holds: out[0] resident bytes (/proc/self/statm), then glibc's mallinfo2:
** out[1] arena, out[2] hblkhd, out[3] uordblks, out[4] fordblks. Returns 0, -1 if RSS is unknown. */
LK_EXPORT int ljleak_memstat(uint64_t *out)
{
  char buf[128];
  struct mallinfo2 mi;
  ssize_t len;
  int fd, ret = -1;
  const char *p;
  unsigned long long pages = 0;
  lk_busy++;
  mi = mallinfo2();
  out[0] = 0;
  fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (len > 0) {
      buf[len] = 0;
      for (p = buf; *p && *p != ' '; p++) ;   /* size, then resident (pages) */
      for (p++; *p >= '0' && *p <= '9'; p++) pages = pages * 10 + (unsigned)(*p - '0');
      out[0] = pages * (uint64_t)sysconf(_SC_PAGESIZE);
      ret = 0;
    }
  }
  out[1] = mi.arena;
  out[2] = mi.hblkhd;
  out[3] = mi.uordblks;
  out[4] = mi.fordblks;
  lk_busy--;
  return ret;
}

/* -- Soak: a sample asked for from outside -------------------------------------------
** `ljleak soak --url` asks a server (nginx) for a growth sample after each request: a signal
** (ljleak_soak_on's number) only marks it asked; the sample (the Lua callback: a full collection,
** the counts) runs when the server next waits for events, in epoll_wait, where no Lua code and
** no allocation is under way. */

static void (*volatile lk_soak_cb)(void);
static volatile sig_atomic_t lk_soak_asked;

static void lk_soak_signal(int sig)
{
  (void)sig;
  lk_soak_asked = 1;
}

/* Call cb when a sample is asked for; returns the signal that asks (0 if it cannot be set up). */
LK_EXPORT int ljleak_soak_on(void (*cb)(void))
{
  struct sigaction sa;
  int sig = SIGRTMIN + 6;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = lk_soak_signal;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL) != 0) return 0;
  lk_soak_cb = cb;
  return sig;
}

LK_EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
  void (*cb)(void) = lk_soak_cb;
  if (UNLIKELY(lk_soak_asked) && cb) {
    lk_soak_asked = 0;
    cb();
    /* A signal the server caught meanwhile (nginx's SIGQUIT) would find it about to wait with no
    ** timeout: back to its loop first, as after any signal. */
    errno = EINTR;
    return -1;
  }
  if (UNLIKELY(!lk_real_epoll_wait)) lk_real_epoll_wait = (lk_epoll_wait_f)dlsym(RTLD_NEXT, "epoll_wait");
  return lk_real_epoll_wait(epfd, events, maxevents, timeout);
}

/* -- Finalizers ------------------------------------------------------------------
** While an ffi.gc finalizer runs, a free() of memory the tracker never handed out (or already
** took back: a double free) is recorded and not passed on (lk_alloc.c). */

LK_EXPORT void ljleak_finalizer_enter(void) { lk_finalizer_enter(); }

LK_EXPORT int ljleak_finalizer_leave(uintptr_t *out, int cap) { return lk_finalizer_leave(out, cap); }
