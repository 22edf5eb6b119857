/* ljleak tracker: what is loaded and what is readable. Loaded objects (for frames and data roots),
** dlclose (kept a no-op, or the module's data copied first), and /proc/self/maps. */
#include "lk_maps.h"
#include "lk_lock.h"
#include "lk_state.h"
#include "lk_sys.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

uintptr_t lk_self_lo, lk_self_hi;
static uintptr_t lk_ldso_lo, lk_ldso_hi;

/* -- Loaded objects ----------------------------------------------------- */

#define LK_MAXMODS 2048
static lk_module *lk_mods;
static int lk_nmods, lk_nloaded;  /* all, and those loaded now (the rest: unloaded ones) */

/* The executable's path (/proc/self/exe), read once: a look-up in /proc costs tens of
** microseconds, and every process pays it at start and again in its report. */
const char *lk_exe_path(void)
{
  static char exe[512];
  if (!exe[0]) {
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = 0;
  }
  return exe;
}

static int lk_phdr_cb(struct dl_phdr_info *info, size_t sz, void *ud)
{
  lk_module *m;
  int i;
  (void)sz;
  if (lk_nmods >= LK_MAXMODS) return 1;
  m = &lk_mods[lk_nmods];
  memset(m, 0, sizeof(*m));
  m->base = info->dlpi_addr;
  m->lo = UINTPTR_MAX;
  for (i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t lo, hi;
    if (ph->p_type != PT_LOAD) continue;
    lo = info->dlpi_addr + ph->p_vaddr;
    hi = lo + ph->p_memsz;
    if (lo < m->lo) m->lo = lo;
    if (hi > m->hi) m->hi = hi;
    if ((ph->p_flags & PF_W) && m->nw < 8) {
      m->wlo[m->nw] = lo;
      m->whi[m->nw] = hi;
      m->nw++;
    }
  }
  if (m->lo == UINTPTR_MAX) return 0;
  if (info->dlpi_name && info->dlpi_name[0]) {
    strncpy(m->path, info->dlpi_name, sizeof(m->path) - 1);
  } else if (lk_nmods == 0) {  /* the executable */
    const char *exe = lk_exe_path();
    size_t n = strnlen(exe, sizeof(m->path) - 1);
    memcpy(m->path, exe, n);
    m->path[n] = 0;
  }
  if (!m->path[0]) return 0;  /* the vDSO */
  m->self = (uintptr_t)&lk_phdr_cb >= m->lo && (uintptr_t)&lk_phdr_cb < m->hi;
  if (m->self) { lk_self_lo = m->lo; lk_self_hi = m->hi; }
  if (strstr(m->path, "/libunwind") || strstr(m->path, "/liblzma")) m->self = 1;  /* ours */
  if (strstr(m->path, "/ld-linux")) { lk_ldso_lo = m->lo; lk_ldso_hi = m->hi; }
  lk_nmods++;
  return 0;
}

/* Modules unloaded while the program ran (LJLEAK_KEEP_MODULES=0): their frames stay
** symbolizable, and a copy of their writable data taken just before dlclose stays a root. */
#define LK_MAXGONE 256
static lk_module *lk_gone;
static int lk_ngone;
static volatile int lk_gone_lock;

/* Replace m's writable segments by copies in tracker memory: the pointers in them stay roots. */
static void lk_gone_copy(lk_module *m)
{
  int k;
  for (k = 0; k < m->nw; k++) {
    size_t len = m->whi[k] - m->wlo[k];
    char *copy = len <= ((size_t)16 << 20) ? lk_sysmap(len) : NULL;
    if (copy) memcpy(copy, (void *)m->wlo[k], len);
    m->wlo[k] = (uintptr_t)copy;
    m->whi[k] = copy ? (uintptr_t)copy + len : 0;
  }
  m->self = 0;
}

static void lk_gone_drop(lk_module *m)
{
  int k;
  for (k = 0; k < m->nw; k++) lk_sysunmap((void *)m->wlo[k], m->whi[k] - m->wlo[k]);
}

static void lk_gone_add(lk_module *m)
{
  if (!lk_gone) lk_gone = lk_sysmap(LK_MAXGONE * sizeof(lk_module));
  if (!lk_gone || lk_ngone >= LK_MAXGONE) { lk_gone_drop(m); return; }
  lk_gone[lk_ngone++] = *m;
}

void lk_maps_snapshot(void)
{
  int i, j;
  if (!lk_mods) lk_mods = lk_sysmap(LK_MAXMODS * sizeof(lk_module));
  if (!lk_mods) return;
  lk_nmods = 0;
  dl_iterate_phdr(lk_phdr_cb, NULL);
  lk_nloaded = lk_nmods;
  for (i = 0; i < lk_ngone && lk_nmods < LK_MAXMODS; i++) {  /* after the loaded ones: */
    for (j = 0; j < lk_nmods; j++)                            /* a reused range is theirs */
      if (lk_mods[j].lo < lk_gone[i].hi && lk_gone[i].lo < lk_mods[j].hi) break;
    if (j == lk_nmods) lk_mods[lk_nmods++] = lk_gone[i];
  }
}

int lk_module_count(void) { return lk_nmods; }
const lk_module *lk_module_get(int i) { return &lk_mods[i]; }
int lk_ip_in_ldso(uintptr_t ip) { return ip >= lk_ldso_lo && ip < lk_ldso_hi; }

int lk_module_find(uintptr_t ip)
{
  int i;
  for (i = 0; i < lk_nmods; i++)
    if (ip >= lk_mods[i].lo && ip < lk_mods[i].hi) return i;
  return -1;
}

/* Keep modules loaded: a library's globals stay roots and its code stays symbolizable
** (LuaJIT unloads ffi.load libraries at lua_close, nginx its modules at exit). Their
** destructors then run at exit, still before the leak check. */
static int lk_keep_modules = 1;
typedef int (*lk_dlclose_f)(void *);

LK_EXPORT int dlclose(void *h)
{
  static lk_dlclose_f real;
  struct link_map *lm = NULL;
  lk_module m;
  int i, found = 0, r;
  if (lk_keep_modules) return 0;
  if (!real) real = (lk_dlclose_f)dlsym(RTLD_NEXT, "dlclose");
  if (!real) return -1;
  lk_spin_lock(&lk_gone_lock);
  lk_busy++;
  /* The module itself (not what it pulled in): copy its data now, while it is mapped; the
  ** destructor runs inside dlclose. */
  if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm) {
    lk_maps_snapshot();
    for (i = 0; i < lk_nloaded && !found; i++) {
      if (lk_mods[i].base == (uintptr_t)lm->l_addr && lm->l_name && strcmp(lk_mods[i].path, lm->l_name) == 0) {
        m = lk_mods[i];
        found = 1;
      }
    }
  }
  if (found) lk_gone_copy(&m);
  r = real(h);
  __atomic_add_fetch(&lk_code_gen, 1, __ATOMIC_RELEASE);  /* lk_unwind.c forgets what it learnt */
  if (found) {
    lk_maps_snapshot();
    for (i = 0; i < lk_nloaded; i++)
      if (lk_mods[i].base == m.base && strcmp(lk_mods[i].path, m.path) == 0) break;
    if (i == lk_nloaded) lk_gone_add(&m);  /* really unloaded */
    else lk_gone_drop(&m);
  }
  lk_busy--;
  lk_spin_unlock(&lk_gone_lock);
  return r;
}

/* -- /proc/self/maps -----------------------------------------------------
** Read with raw syscalls into tracker memory: usable at exit, when nothing may allocate. */

typedef struct { uintptr_t lo, hi; } lk_range;
#define LK_MAXRD 65536
static lk_range *lk_rd;      /* readable mappings, sorted */
static size_t lk_nrd;
static uintptr_t lk_stack_lo, lk_stack_hi;

static uintptr_t lk_hex(const char **p)
{
  uintptr_t v = 0;
  for (;; (*p)++) {
    char c = **p;
    if (c >= '0' && c <= '9') v = v * 16 + (c - '0');
    else if (c >= 'a' && c <= 'f') v = v * 16 + (c - 'a' + 10);
    else return v;
  }
}

static void lk_maps_line(const char *l, const char *end)
{
  const char *p = l, *path;
  uintptr_t lo, hi;
  lo = lk_hex(&p);
  if (*p++ != '-') return;
  hi = lk_hex(&p);
  if (*p++ != ' ') return;
  for (path = p; path < end && *path != '/' && *path != '['; path++) ;
  if (end - path >= 7 && memcmp(path, "[stack]", 7) == 0) { lk_stack_lo = lo; lk_stack_hi = hi; }
  if (p[0] != 'r') return;
  if (end - path >= 6 && memcmp(path, "[vvar]", 6) == 0) return;
  if (end - path >= 6 && memcmp(path, "[vsys", 5) == 0) return;
  if (lk_nrd < LK_MAXRD) { lk_rd[lk_nrd].lo = lo; lk_rd[lk_nrd].hi = hi; lk_nrd++; }
}

static void lk_maps_read(void)
{
  static char buf[8192];
  size_t have = 0;
  int fd;
  if (!lk_rd) lk_rd = lk_sysmap(LK_MAXRD * sizeof(lk_range));
  if (!lk_rd) return;
  lk_nrd = 0;
  fd = (int)syscall(SYS_open, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  for (;;) {
    ssize_t n = syscall(SYS_read, fd, buf + have, sizeof(buf) - have);
    char *s = buf, *nl;
    if (n <= 0) break;
    have += (size_t)n;
    while ((nl = memchr(s, '\n', buf + have - s))) {
      lk_maps_line(s, nl);
      s = nl + 1;
    }
    have = buf + have - s;
    memmove(buf, s, have);
    if (have == sizeof(buf)) have = 0;  /* absurdly long line: drop it */
  }
  syscall(SYS_close, fd);
}

int lk_maps_stack_top(uintptr_t *lo, uintptr_t *hi)
{
  if (!lk_stack_hi) return 0;
  *lo = lk_stack_lo;
  *hi = lk_stack_hi;
  return 1;
}

void lk_maps_readable(uintptr_t lo, uintptr_t hi, lk_range_fn fn, void *ud)
{
  size_t a = 0, b = lk_nrd;
  while (a < b) {  /* first mapping ending above lo */
    size_t m = (a + b) / 2;
    if (lk_rd[m].hi <= lo) a = m + 1; else b = m;
  }
  for (; a < lk_nrd && lk_rd[a].lo < hi; a++) {
    uintptr_t l = lk_rd[a].lo > lo ? lk_rd[a].lo : lo;
    uintptr_t h = lk_rd[a].hi < hi ? lk_rd[a].hi : hi;
    if (l < h) fn(l, h, ud);
  }
}

/* -- Setup -------------------------------------------------------------- */

void lk_maps_init(void)
{
  const char *e = getenv(LK_ENV_KEEP_MODULES);
  lk_lock_register(&lk_gone_lock);  /* outermost: dlclose runs destructors, which allocate */
  if (e && e[0] == '0') lk_keep_modules = 0;
  lk_maps_snapshot();  /* finds the tracker's own code and ld.so; /proc/self/maps: at a check */
}

void lk_maps_load(void)
{
  lk_maps_read();
}
