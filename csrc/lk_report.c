/* ljleak tracker: the raw report (doc/raw-format.md), written at exit with write() only, atomically
** (temporary file, then rename), and into tracker memory for the mid-run checks of the Lua API. */
#include "lk_report.h"
#include "lk_alloc.h"
#include "lk_ctx.h"
#include "lk_luavm.h"
#include "lk_maps.h"
#include "lk_stack.h"
#include "lk_state.h"
#include "lk_sys.h"
#include "lk_thread.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LK_NAME(name, text) text,
static const char *const lk_kinds[] = { LK_KINDS(LK_NAME) "live" };  /* LK_REPORT_LIVE's blocks */
#undef LK_NAME
#define LK_LIVE LK_KIND__MAX

/* Each report has its own serial: a site, Lua stack or context is written once per report. */
static uint32_t lk_serial;

/* -- Output buffer -------------------------------------------------------- */

typedef struct lk_out {
  int fd;            /* flushed there when full; -1: a fixed buffer (cut when full), or a growing one */
  size_t len, size;
  char *buf;
  int grow;          /* a buffer in tracker memory that doubles when full */
} lk_out;
static char lk_obuf[65536];
static lk_out lk_o = { -1, 0, sizeof(lk_obuf), lk_obuf, 0 };

/* A growing buffer: 16 bytes of header (its mapped size), then the text. */
#define LK_GROW_HDR 16

static int lk_grow(lk_out *o)
{
  size_t size = o->size ? 2 * (o->size + LK_GROW_HDR) : 65536;
  char *b = lk_sysmap(size);
  if (!b) { o->grow = 0; return 0; }
  memcpy(b, &size, sizeof(size));
  if (o->buf) {
    memcpy(b + LK_GROW_HDR, o->buf, o->len);
    lk_sysunmap(o->buf - LK_GROW_HDR, o->size + LK_GROW_HDR);
  }
  o->buf = b + LK_GROW_HDR;
  o->size = size - LK_GROW_HDR;
  return 1;
}

static void lk_flush(lk_out *o)
{
  size_t off = 0;
  while (off < o->len) {
    ssize_t n = write(o->fd, o->buf + off, o->len - off);
    if (n <= 0) break;
    off += (size_t)n;
  }
  o->len = 0;
}

static void lk_puts(lk_out *o, const char *s)
{
  while (*s) {
    if (o->len == o->size) {
      if (o->fd >= 0) lk_flush(o);
      else if (!o->grow || !lk_grow(o)) return;  /* a fixed buffer, or no memory: cut */
    }
    o->buf[o->len++] = *s++;
  }
}

static void lk_putu(lk_out *o, uint64_t v)
{
  char t[24];
  int i = 23;
  t[i] = 0;
  do { t[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  lk_puts(o, t + i);
}

static void lk_putx(lk_out *o, uint64_t v)
{
  char t[24];
  int i = 23;
  t[i] = 0;
  do { t[--i] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
  t[--i] = 'x';
  t[--i] = '0';
  lk_puts(o, t + i);
}

/* -- Aggregation: (site, kind, owner) -> blocks, bytes --------------------- */

typedef struct lk_agg {
  uint32_t site, kind;
  uint32_t owner;      /* indirect blocks: 1 + the site of the definite block that holds them; or 0 */
  uint64_t blocks, bytes;
} lk_agg;

/* 1 + the site of the definite block that holds indirect block I of R, or 0. */
static uint32_t lk_owner_site(const lk_result *r, size_t i)
{
  const lk_block *o;
  if (!r->owner || r->blocks[i].state != LK_INDIRECT) return 0;
  o = &r->blocks[r->owner[i]];
  return o->state == LK_DEFINITE && o->site != LK_SITE_INTERNAL ? o->site + 1 : 0;
}

/* Is block B part of the report that FILTER asks for? Its kind there (LK_LIVE for a snapshot). */
static int lk_wanted(const lk_block *b, const lk_report_filter *f, uint32_t *kind)
{
  const lk_site *s;
  uint32_t epoch = 0;
  if (b->site == LK_SITE_INTERNAL) return 0;  /* ours */
  if (f->what == LK_REPORT_EXIT) {
    *kind = b->state;
    return b->state <= LK_DEFINITE;              /* not freed meanwhile */
  }
  if (f->what == LK_REPORT_LOST &&
      b->state != LK_DEFINITE && b->state != LK_INDIRECT && b->state != LK_POSSIBLE) return 0;
  s = lk_site_get(b->site);
  lk_ctx_tag(s ? s->ctx : 0, &epoch, NULL);
  if (epoch < f->lo || epoch >= f->hi) return 0;
  *kind = f->what == LK_REPORT_LIVE ? LK_LIVE : b->state;
  return 1;
}

/* The entry of (site, kind, owner) in the open-addressing table T of N entries (a power of 2). */
static lk_agg *lk_agg_slot(lk_agg *t, size_t n, uint32_t site, uint32_t kind, uint32_t owner)
{
  size_t k = ((site * 2654435761u) ^ kind ^ (owner * 40503u)) & (n - 1);
  while (t[k].blocks && (t[k].site != site || t[k].kind != kind || t[k].owner != owner)) k = (k + 1) & (n - 1);
  return &t[k];
}

/* The table of (site, kind, owner) -> blocks, bytes of R's blocks that F asks for: sized by the
** number of distinct entries (it doubles when half full), not by the number of blocks. It starts
** at a page (a short process has a few dozen entries; each page of a bigger start was a fault,
** read whole by the report). */
static size_t lk_aggregate(const lk_result *r, const lk_report_filter *f, lk_agg **out, size_t *cap)
{
  size_t n = 4096 / sizeof(lk_agg), i, j, used = 0;
  lk_agg *t = lk_sysmap(n * sizeof(lk_agg));
  *out = t;
  *cap = n;
  if (!t) return 0;
  for (i = 0; i < r->n; i++) {
    const lk_block *b = &r->blocks[i];
    uint32_t kind, owner;
    lk_agg *e;
    if (!lk_wanted(b, f, &kind)) continue;
    owner = lk_owner_site(r, i);
    e = lk_agg_slot(t, n, b->site, kind, owner);
    if (!e->blocks) {
      if (2 * (used + 1) > n) {  /* grow, and find the entry again */
        lk_agg *g = lk_sysmap(2 * n * sizeof(lk_agg));
        if (!g && used + 1 < n) goto fill;   /* no memory: fuller */
        if (!g) continue;                   /* ... full: the block is left out */
        for (j = 0; j < n; j++)
          if (t[j].blocks) *lk_agg_slot(g, 2 * n, t[j].site, t[j].kind, t[j].owner) = t[j];
        lk_sysunmap(t, n * sizeof(lk_agg));
        *out = t = g;
        *cap = n = 2 * n;
        e = lk_agg_slot(t, n, b->site, kind, owner);
      }
    fill:
      e->site = b->site;
      e->kind = kind;
      e->owner = owner;
      used++;
    }
    e->blocks++;
    e->bytes += b->size;
  }
  return used;
}

/* -- Raw report ------------------------------------------------------------ */

/* A text as one field: blanks, '%' and newlines escaped; "-" when absent. */
static void lk_put_field(lk_out *o, const char *s)
{
  if (!s || !*s) { lk_puts(o, "-"); return; }
  if (s[0] == '-' && !s[1]) { lk_puts(o, "%2d"); return; }  /* a literal "-" */
  for (; *s; s++) {
    if (*s == ' ') lk_puts(o, "%20");
    else if (*s == '%') lk_puts(o, "%25");
    else if (*s == '\n') lk_puts(o, "%0a");
    else { char c[2] = { *s, 0 }; lk_puts(o, c); }
  }
}

/* One line per Lua frame: lua ID LINE FLAGS NAME SOURCE (source last: it may hold spaces). */
typedef struct { lk_out *o; uint32_t id; } lk_lua_ud;

static void lk_write_lua_frame(int line, int flags, const char *name, const char *src, void *ud)
{
  lk_lua_ud *u = ud;
  const char *p;
  lk_puts(u->o, "lua ");
  lk_putu(u->o, u->id);
  lk_puts(u->o, line < 0 ? " -1 " : " ");
  if (line >= 0) { lk_putu(u->o, (uint64_t)line); lk_puts(u->o, " "); }
  lk_putu(u->o, (uint64_t)flags);
  lk_puts(u->o, " ");
  if (!name || !*name) lk_puts(u->o, "?");
  else lk_put_field(u->o, name);
  lk_puts(u->o, " ");
  for (p = src; *p; p++) {
    char c[2] = { *p == '\n' ? ' ' : *p, 0 };
    lk_puts(u->o, c);
  }
  lk_puts(u->o, "\n");
}

/* ctx ID EPOCH TAG NOTE: tag and note escaped, "-" when absent. */
static void lk_write_ctx(lk_out *o, uint32_t id)
{
  uint32_t epoch = 0;
  const char *note = NULL, *tag = lk_ctx_tag(id, &epoch, &note);
  lk_puts(o, "ctx ");
  lk_putu(o, id);
  lk_puts(o, " ");
  lk_putu(o, epoch);
  lk_puts(o, " ");
  lk_put_field(o, tag);
  lk_puts(o, " ");
  lk_put_field(o, note);
  lk_puts(o, "\n");
}

static void lk_write_lua(lk_out *o, uint32_t id)
{
  lk_lua_ud u = { o, id };
  lk_lua_frames(id, lk_write_lua_frame, &u);
}

static void lk_write_site(lk_out *o, uint32_t id, uint32_t serial)
{
  const lk_site *s = lk_site_get(id);
  int i;
  lk_puts(o, "site ");
  lk_putu(o, id);
  lk_puts(o, " ");
  lk_puts(o, s && s->fn < LK_F__MAX ? lk_fnames[s->fn] : "malloc");
  lk_puts(o, " ");
  lk_putu(o, s ? s->depth : 0);
  if (!id) lk_puts(o, " dropped=1");  /* blocks whose stack could not be kept */
  for (i = 0; s && i < s->depth; i++) {
    int m = lk_module_find(s->ips[i]);
    lk_puts(o, " ");
    if (m < 0) {
      lk_puts(o, "?:");
      lk_putx(o, s->ips[i]);
    } else {
      lk_putu(o, (uint64_t)m);
      lk_puts(o, ":");
      lk_putx(o, s->ips[i] - lk_module_get(m)->base);
    }
  }
  if (s && s->ctx) { lk_puts(o, " ctx="); lk_putu(o, s->ctx); }
  if (s && s->lua) { lk_puts(o, " lua="); lk_putu(o, s->lua); }
  lk_puts(o, "\n");
  if (s && s->lua && !lk_lua_stamp(s->lua, serial)) lk_write_lua(o, s->lua);
  if (s && s->ctx && !lk_ctx_stamp(s->ctx, serial)) lk_write_ctx(o, s->ctx);
}

/* Site ID's line, once per report (site 0, which is never stamped: *SITE0 says if it was written). */
static void lk_site_once(lk_out *o, uint32_t id, uint32_t serial, int *site0)
{
  if (id == 0) {
    if (!*site0) lk_write_site(o, 0, serial);
    *site0 = 1;
  } else if (!lk_site_stamp(id, serial)) {
    lk_write_site(o, id, serial);
  }
}

/* cmd ARG...: the process's command line (/proc/self/cmdline, as the program may have rewritten
** it: nginx's "nginx: worker process"), each argument escaped, "-" when empty; the first
** LK_CMDLINE_MAX bytes. */
#define LK_CMDLINE_MAX 4096

static void lk_write_cmdline(lk_out *o)
{
  char buf[LK_CMDLINE_MAX + 1];
  size_t len = 0, i, start = 0;
  ssize_t n;
  int fd = (int)syscall(SYS_open, "/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  while (len < LK_CMDLINE_MAX && (n = read(fd, buf + len, LK_CMDLINE_MAX - len)) > 0) len += (size_t)n;
  syscall(SYS_close, fd);
  if (len == 0) return;
  if (buf[len - 1] != 0) buf[len++] = 0;  /* cut: the last argument ends there */
  lk_puts(o, "cmd");
  for (i = 0; i < len; i++) {
    if (buf[i]) continue;
    lk_puts(o, " ");
    lk_put_field(o, buf + start);
    start = i + 1;
  }
  lk_puts(o, "\n");
}

static void lk_write_raw(lk_out *o, const lk_result *r, lk_agg *t, size_t cap)
{
  uint32_t serial = ++lk_serial;
  size_t i;
  uint64_t blocks = 0, bytes = 0, allocs = 0, allocated = 0;
  int m, site0 = 0;
  pid_t tids[64];
  int nt;
  lk_puts(o, "ljleak-raw 1\npid ");
  lk_putu(o, (uint64_t)getpid());
  lk_puts(o, "\nppid ");
  lk_putu(o, (uint64_t)getppid());
  lk_puts(o, "\nexe ");
  lk_puts(o, lk_exe_path());
  lk_puts(o, "\n");
  lk_write_cmdline(o);
  lk_puts(o, "lua_state ");
  lk_puts(o, lk_lua_state == 1 ? "open" : lk_lua_state == 2 ? "closed" : "none");
  lk_puts(o, "\n");
  if (lk_lua_problem()) {
    lk_puts(o, "lua_vm unavailable ");
    lk_puts(o, lk_lua_problem());
    lk_puts(o, "\n");
  }
  nt = lk_threads_unstopped_list(tids, 64);
  for (m = 0; m < nt && m < 64; m++) {
    lk_puts(o, "unstopped ");
    lk_putu(o, (uint64_t)tids[m]);
    lk_puts(o, r->unsafe ? " unsafe\n" : "\n");
  }
  for (m = 0; m < lk_module_count(); m++) {
    const lk_module *mod = lk_module_get(m);
    lk_puts(o, "module ");
    lk_putu(o, (uint64_t)m);
    lk_puts(o, " ");
    lk_putx(o, mod->base);
    lk_puts(o, " ");
    lk_puts(o, mod->path);
    lk_puts(o, "\n");
  }
  for (i = 0; i < cap; i++) {  /* each site once, even when it has several kinds */
    if (!t[i].blocks) continue;
    lk_site_once(o, t[i].site, serial, &site0);
    if (t[i].owner) lk_site_once(o, t[i].owner - 1, serial, &site0);
  }
  for (i = 0; i < cap; i++) {
    if (!t[i].blocks) continue;
    lk_puts(o, "leak ");
    lk_puts(o, lk_kinds[t[i].kind]);
    lk_puts(o, " ");
    lk_putu(o, t[i].site);
    lk_puts(o, " ");
    lk_putu(o, t[i].blocks);
    lk_puts(o, " ");
    lk_putu(o, t[i].bytes);
    if (t[i].owner) {
      lk_puts(o, " owner=");
      lk_putu(o, t[i].owner - 1);
    }
    lk_puts(o, "\n");
  }
  for (i = 0; i < r->n; i++)
    if (r->blocks[i].site != LK_SITE_INTERNAL) {
      blocks++;
      bytes += r->blocks[i].size;
    }
  lk_alloc_totals(&allocs, &allocated);
  lk_puts(o, "stats live_blocks=");
  lk_putu(o, blocks);
  lk_puts(o, " live_bytes=");
  lk_putu(o, bytes);
  lk_puts(o, " allocs=");
  lk_putu(o, allocs);
  lk_puts(o, " allocated=");
  lk_putu(o, allocated);
  lk_puts(o, " roots_bytes=");
  lk_putu(o, r->roots_bytes);
  lk_puts(o, " scan_us=");
  lk_putu(o, r->scan_us);
  if (lk_nomem) { lk_puts(o, " unrecorded=");  lk_putu(o, lk_nomem); }
  if (lk_sites_dropped) { lk_puts(o, " stacks_dropped="); lk_putu(o, lk_sites_dropped); }
  if (r->nomem) { lk_puts(o, " unclassified="); lk_putu(o, r->nomem); }
  lk_puts(o, "\nend\n");
}

/* Standalone use (LD_PRELOAD without `ljleak run`): say what was lost, LSan-style. */
static void lk_write_brief(lk_out *o, const lk_result *r)
{
  uint64_t blocks = 0, bytes = 0;
  size_t i;
  for (i = 0; i < r->n; i++)
    if (r->blocks[i].state == LK_DEFINITE && r->blocks[i].site != LK_SITE_INTERNAL) {
      blocks++;
      bytes += r->blocks[i].size;
    }
  if (!blocks) return;
  lk_puts(o, "ljleak: ");
  lk_putu(o, bytes);
  lk_puts(o, " bytes in ");
  lk_putu(o, blocks);
  lk_puts(o, " blocks definitely lost in pid ");
  lk_putu(o, (uint64_t)lk_pid);
  lk_puts(o, " (run under `ljleak run` for the stacks)\n");
}

/* DIR/proc.PID.SUFFIX into buf; 0 if it does not fit. */
static int lk_proc_path_of(char *buf, size_t size, pid_t pid, const char *suffix)
{
  lk_out name = { -1, 0, size, buf, 0 };
  if (!lk_dir) return 0;
  lk_puts(&name, lk_dir);
  lk_puts(&name, "/proc.");
  lk_putu(&name, (uint64_t)pid);
  lk_puts(&name, suffix);
  if (name.len + 1 > size) return 0;
  buf[name.len] = 0;
  return 1;
}

static int lk_proc_path(char *buf, size_t size, const char *suffix)
{
  return lk_proc_path_of(buf, size, lk_pid, suffix);
}

/* Create PATH for writing, never through a link and never over something planted there. */
static int lk_create(const char *path)
{
  int fd = (int)syscall(SYS_open, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {  /* a leftover of this pid (an exec'd image before us): replace it */
    syscall(SYS_unlink, path);
    fd = (int)syscall(SYS_open, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  }
  return fd;
}

/* proc.PID.live: this process runs under the tracker and has not written its report yet (the
** CLI waits for processes that outlive the command). */
void lk_report_mark_live(pid_t pid)
{
  char path[1024];
  int fd;
  if (!lk_proc_path_of(path, sizeof(path), pid, ".live")) return;
  fd = (int)syscall(SYS_open, path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd >= 0) syscall(SYS_close, fd);
}

/* proc.PID.SUFFIX holding one line: VERB SHOWN: WHY (why a process is not checked). */
void lk_report_note(pid_t pid, const char *suffix, const char *verb, const char *shown, const char *why)
{
  char path[1024], line[1024];
  lk_out o = { -1, 0, sizeof(line) - 1, line, 0 };
  int fd;
  if (!lk_proc_path_of(path, sizeof(path), pid, suffix)) return;
  lk_puts(&o, verb);
  lk_puts(&o, shown);
  lk_puts(&o, ", which ");
  lk_puts(&o, why);
  line[o.len++] = '\n';
  fd = lk_create(path);
  if (fd < 0) return;
  if (write(fd, line, o.len) < 0) { /* nothing more to do */ }
  syscall(SYS_close, fd);
}

void lk_report_note_remove(pid_t pid, const char *suffix)
{
  char path[1024];
  if (lk_proc_path_of(path, sizeof(path), pid, suffix)) syscall(SYS_unlink, path);
}

/* A raw report of R's blocks that FILTER asks for, into tracker memory: *out (free it with
** lk_report_free); returns its length (0 and *out NULL when no memory could be had). */
size_t lk_report_raw(const lk_result *r, const lk_report_filter *f, char **out)
{
  lk_out o = { -1, 0, 0, NULL, 1 };
  lk_agg *t;
  size_t cap = 0;
  lk_aggregate(r, f, &t, &cap);
  lk_write_raw(&o, r, t, t ? cap : 0);
  if (t) lk_sysunmap(t, cap * sizeof(lk_agg));
  *out = o.grow ? o.buf : NULL;
  if (!o.grow && o.buf) lk_report_free(o.buf);
  return *out ? o.len : 0;
}

/* The lines of Lua stack ID (ljleak_here's), as a raw report of nothing else. */
size_t lk_report_lua(uint32_t id, char **out)
{
  lk_out o = { -1, 0, 0, NULL, 1 };
  lk_puts(&o, "ljleak-raw 1\npid ");
  lk_putu(&o, (uint64_t)lk_pid);
  lk_puts(&o, "\n");
  if (id) lk_write_lua(&o, id);
  lk_puts(&o, "end\n");
  *out = o.grow ? o.buf : NULL;
  if (!o.grow && o.buf) lk_report_free(o.buf);
  return *out ? o.len : 0;
}

void lk_report_free(char *p)
{
  size_t size;
  if (!p) return;
  memcpy(&size, p - LK_GROW_HDR, sizeof(size));
  lk_sysunmap(p - LK_GROW_HDR, size);
}

/* proc.PID.live, opened to be written: only when it is this process's own and empty (a regular
** file of its user with one link, not a link). Writing the report there spares creating a second
** file, the most expensive step of a short process's check on ext4. -1 if not. (Not truncated:
** ext4 would then write it back at close.) */
static int lk_open_live(const char *live)
{
  struct stat st;
  int fd = (int)syscall(SYS_open, live, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  if (syscall(SYS_fstat, fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
      st.st_uid != geteuid() || st.st_size != 0) {
    syscall(SYS_close, fd);
    return -1;
  }
  return fd;
}

/* The report goes into proc.PID.live, which then becomes proc.PID.raw (one rename: while it is
** written, the file still says the process has not reported). When that file is not this
** process's own to write, into proc.PID.raw.tmp, renamed in the same way. */
void lk_report_write(const lk_result *r)
{
  static const lk_report_filter all = { LK_REPORT_EXIT, 0, 0 };
  lk_out *o = &lk_o;
  lk_agg *t;
  size_t cap = 0;
  static char tmp[4096], fin[4096], live[4096];
  const char *from = live;
  if (!lk_dir) {
    o->fd = 2;
    o->len = 0;
    lk_write_brief(o, r);
    lk_flush(o);
    return;
  }
  if (!lk_proc_path(fin, sizeof(fin), ".raw") || !lk_proc_path(tmp, sizeof(tmp), ".raw.tmp") ||
      !lk_proc_path(live, sizeof(live), ".live"))
    return;
  o->fd = lk_open_live(live);
  if (o->fd < 0) {
    o->fd = lk_create(tmp);
    from = tmp;
  }
  if (o->fd < 0) return;
  o->len = 0;
  lk_aggregate(r, &all, &t, &cap);
  lk_write_raw(o, r, t, t ? cap : 0);
  lk_flush(o);
  syscall(SYS_close, o->fd);
  syscall(SYS_rename, from, fin);
  if (from == tmp) syscall(SYS_unlink, live);
}
