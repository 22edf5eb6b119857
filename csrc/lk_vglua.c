/* ljleak: Lua frames under Valgrind (part of libljleak_vg.so). An allocation made while Lua code
** calls C goes through a small trampoline of its own Lua stack, so Valgrind's stack holds an address
** that names it; at exit the process writes which address stands for which Lua frames. */
#include "ljleak.h"
#include "lk_def.h"
#include "lk_luaread.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>


extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern int __cxa_atexit(void (*)(void *), void *, void *);

static __thread char *lk_vm_g;   /* the attached VM's global_State, on the thread that runs it */
static __thread int lk_inside;   /* this thread is in the code below: no trampoline */
static int lk_lua_depth = LK_LUA_DEPTH_DEFAULT;

/* -- Trampolines --------------------------------------------------------------
** push rbp; mov rbp, rsp; and rsp, -16; call *r11; mov rsp, rbp; pop rbp; ret. Valgrind unwinds
** through it by its frame pointer; each distinct Lua stack gets its own copy, at its own address. */

#define LK_SLOT 32
#define LK_NSLOTS 65536
#define LK_KEYS_SIZE ((size_t)16 << 20)
static const unsigned char lk_code[] = {
  0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xe4, 0xf0, 0x41, 0xff, 0xd3, 0x48, 0x89, 0xec, 0x5d, 0xc3
};

typedef struct lk_key { uint32_t hash, len, slot, used; size_t off; } lk_key;
static unsigned char *lk_slots;     /* LK_NSLOTS trampolines */
static lk_key *lk_keys;             /* open addressing, 2 * LK_NSLOTS */
static char *lk_key_bytes;          /* the Lua stacks, as lk_lbuf bytes */
static size_t lk_key_used;
static uint32_t lk_nslots;
static uint32_t *lk_slot_key;       /* slot -> index in lk_keys */
static volatile int lk_lock;

static void *lk_map(size_t len, int prot)
{
  void *p = (void *)syscall(SYS_mmap, NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static uint32_t lk_hash(const char *b, size_t n)
{
  uint32_t h = 2166136261u;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (uint8_t)b[i]) * 16777619u;
  return h ? h : 1;
}

/* The trampoline of the Lua stack in lb, or NULL (none can be made). */
static void *lk_trampoline(const lk_lbuf *lb)
{
  uint32_t h = lk_hash(lb->b, lb->n), i;
  void *t = NULL;
  while (__atomic_exchange_n(&lk_lock, 1, __ATOMIC_ACQUIRE)) ;
  if (!lk_slots) {
    lk_slots = lk_map((size_t)LK_NSLOTS * LK_SLOT, PROT_READ | PROT_WRITE | PROT_EXEC);
    lk_keys = lk_map(2 * (size_t)LK_NSLOTS * sizeof(lk_key), PROT_READ | PROT_WRITE);
    lk_key_bytes = lk_map(LK_KEYS_SIZE, PROT_READ | PROT_WRITE);
    lk_slot_key = lk_map((size_t)LK_NSLOTS * sizeof(uint32_t), PROT_READ | PROT_WRITE);
  }
  if (lk_slots && lk_keys && lk_key_bytes && lk_slot_key) {
    for (i = h & (2 * LK_NSLOTS - 1);; i = (i + 1) & (2 * LK_NSLOTS - 1)) {
      lk_key *k = &lk_keys[i];
      if (!k->used) {
        if (lk_nslots >= LK_NSLOTS || lk_key_used + lb->n > LK_KEYS_SIZE) break;
        memcpy(lk_key_bytes + lk_key_used, lb->b, lb->n);
        k->hash = h;
        k->len = (uint32_t)lb->n;
        k->off = lk_key_used;
        k->slot = lk_nslots;
        lk_key_used += lb->n;
        memcpy(lk_slots + (size_t)k->slot * LK_SLOT, lk_code, sizeof(lk_code));
        lk_slot_key[lk_nslots++] = i;
        k->used = 1;
        t = lk_slots + (size_t)k->slot * LK_SLOT;
        break;
      }
      if (k->hash == h && k->len == lb->n && !memcmp(lk_key_bytes + k->off, lb->b, lb->n)) {
        t = lk_slots + (size_t)k->slot * LK_SLOT;
        break;
      }
    }
  }
  __atomic_store_n(&lk_lock, 0, __ATOMIC_RELEASE);
  return t;
}

/* The trampoline for an allocation made now, or NULL (no Lua code is calling C on this thread). */
static void *lk_here(void)
{
  lk_lbuf lb;
  int32_t tr;
  void *t;
  if (__builtin_expect(lk_vm_g == NULL, 1) || lk_inside) return NULL;
  lk_inside = 1;
  t = lk_luaread_frames(lk_vm_g, &lb, lk_lua_depth, &tr) ? lk_trampoline(&lb) : NULL;
  lk_inside = 0;
  return t;
}

/* fn(a, b, c) called through the trampoline t (this file is built without a red zone). */
static uintptr_t lk_via(void *t, void *fn, uintptr_t a, uintptr_t b, uintptr_t c)
{
  register uintptr_t rdi __asm__("rdi") = a;
  register uintptr_t rsi __asm__("rsi") = b;
  register uintptr_t rdx __asm__("rdx") = c;
  register void *r11 __asm__("r11") = fn;
  register uintptr_t rax __asm__("rax");
  __asm__ volatile("call *%[t]"
                   : "=a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r11)
                   : [t] "r"(t)
                   : "rcx", "r8", "r9", "r10", "memory", "cc",
                     "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                     "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  return rax;
}

/* -- The allocation functions ---------------------------------------------------
** ljleak runs Valgrind with --soname-synonyms=somalloc=nouserintercepts, so these run, and call
** libc's (which Valgrind replaces). Without a Lua caller they are a plain tail call. */

typedef void *(*lk_f1)(size_t);
typedef void *(*lk_f2)(size_t, size_t);
typedef void *(*lk_fr)(void *, size_t);
typedef int (*lk_fpm)(void **, size_t, size_t);
static lk_f1 lk_malloc_r, lk_valloc_r, lk_pvalloc_r;
static lk_f2 lk_calloc_r, lk_memalign_r, lk_aligned_r;
static lk_fr lk_realloc_r;
static lk_fpm lk_posix_memalign_r;

LK_EXPORT void *malloc(size_t n)
{
  void *t = lk_here();
  if (!lk_malloc_r) return __libc_malloc(n);
  return t ? (void *)lk_via(t, (void *)lk_malloc_r, n, 0, 0) : lk_malloc_r(n);
}

LK_EXPORT void *calloc(size_t n, size_t sz)
{
  void *t = lk_here();
  if (!lk_calloc_r) return __libc_calloc(n, sz);
  return t ? (void *)lk_via(t, (void *)lk_calloc_r, n, sz, 0) : lk_calloc_r(n, sz);
}

LK_EXPORT void *realloc(void *p, size_t n)
{
  void *t = lk_here();
  if (!lk_realloc_r) return __libc_realloc(p, n);
  return t ? (void *)lk_via(t, (void *)lk_realloc_r, (uintptr_t)p, n, 0) : lk_realloc_r(p, n);
}

LK_EXPORT void *memalign(size_t a, size_t n)
{
  void *t = lk_here();
  if (!lk_memalign_r) return __libc_memalign(a, n);
  return t ? (void *)lk_via(t, (void *)lk_memalign_r, a, n, 0) : lk_memalign_r(a, n);
}

LK_EXPORT void *aligned_alloc(size_t a, size_t n)
{
  void *t = lk_here();
  if (!lk_aligned_r) return __libc_memalign(a, n);
  return t ? (void *)lk_via(t, (void *)lk_aligned_r, a, n, 0) : lk_aligned_r(a, n);
}

LK_EXPORT int posix_memalign(void **out, size_t a, size_t n)
{
  void *t = lk_here();
  if (!lk_posix_memalign_r) return ENOMEM;
  return t ? (int)lk_via(t, (void *)lk_posix_memalign_r, (uintptr_t)out, a, n) : lk_posix_memalign_r(out, a, n);
}

LK_EXPORT void *valloc(size_t n)
{
  void *t = lk_here();
  if (!lk_valloc_r) return __libc_memalign(4096, n);
  return t ? (void *)lk_via(t, (void *)lk_valloc_r, n, 0, 0) : lk_valloc_r(n);
}

LK_EXPORT void *pvalloc(size_t n)
{
  void *t = lk_here();
  if (!lk_pvalloc_r) return __libc_memalign(4096, (n + 4095) & ~(size_t)4095);
  return t ? (void *)lk_via(t, (void *)lk_pvalloc_r, n, 0, 0) : lk_pvalloc_r(n);
}

/* -- Attaching (the same entry points as the tracker's) ----------------------------- */

LK_EXPORT int ljleak_lua_probe(uintptr_t L, int step)
{
  return lk_luaread_probe(L, step);
}

LK_EXPORT int ljleak_lua_attach(uintptr_t L, int depth)
{
  char *g = NULL;
  if (lk_luaread_attach(L, &g)) return 0;
  if (depth > 0) lk_lua_depth = depth > LK_LUA_DEPTH_MAX ? LK_LUA_DEPTH_MAX : depth;
  lk_vm_g = g;
  return 1;
}

/* The global_State attached on this thread, or 0 (vm.lua: does a state that ends still have it?). */
LK_EXPORT uintptr_t ljleak_lua_attached(void)
{
  return (uintptr_t)lk_vm_g;
}

LK_EXPORT void ljleak_lua_detach(void)
{
  lk_vm_g = NULL;
}

/* -- At exit: which address stands for which Lua frames ------------------------------
** DIR/vglua.PID.ID (ID: the LJLEAK_VG_ID that names this process's XML file), lines as the raw
** report's Lua lines: "lua 0xADDR LINE FLAGS NAME SOURCE", an address per trampoline. */

static char lk_out_path[4096];
static char lk_buf[65536];
static size_t lk_blen;
static int lk_fd = -1;

static void lk_flush(void)
{
  size_t off = 0;
  while (off < lk_blen) {
    ssize_t w = write(lk_fd, lk_buf + off, lk_blen - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
  lk_blen = 0;
}

static void lk_puts(const char *s)
{
  for (; *s; s++) {
    if (lk_blen == sizeof(lk_buf)) lk_flush();
    lk_buf[lk_blen++] = *s;
  }
}

static void lk_putx(uint64_t v)
{
  char t[24];
  int i = 23;
  t[i] = 0;
  do { t[--i] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
  lk_puts(t + i);
}

static void lk_putd(int64_t v)
{
  char t[24];
  int i = 23, neg = v < 0;
  uint64_t u = neg ? (uint64_t)-v : (uint64_t)v;
  t[i] = 0;
  do { t[--i] = (char)('0' + u % 10); u /= 10; } while (u);
  if (neg) t[--i] = '-';
  lk_puts(t + i);
}

static uintptr_t lk_cur_addr;

static void lk_dump_frame(int line, int flags, const char *name, const char *src, void *ud)
{
  const char *p;
  (void)ud;
  lk_puts("lua 0x");
  lk_putx(lk_cur_addr);
  lk_puts(" ");
  lk_putd(line);
  lk_puts(" ");
  lk_putd(flags);
  lk_puts(" ");
  if (!name || !*name) lk_puts("?");
  for (p = name; p && *p; p++) {
    char c[4] = { *p, 0 };
    if (*p == ' ' || *p == '%' || *p == '\n') { c[0] = '%'; c[1] = "0123456789abcdef"[(uint8_t)*p >> 4];
                                                 c[2] = "0123456789abcdef"[*p & 15]; }
    lk_puts(c);
  }
  lk_puts(" ");
  for (p = src; *p; p++) {
    char c[2] = { *p == '\n' ? ' ' : *p, 0 };
    lk_puts(c);
  }
  lk_puts("\n");
}

static void lk_dump(void *unused)
{
  uint32_t s;
  (void)unused;
  if (!lk_out_path[0] || !lk_nslots) return;
  lk_fd = (int)syscall(SYS_open, lk_out_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (lk_fd < 0) return;
  lk_puts("ljleak-vglua 1\n");
  for (s = 0; s < lk_nslots; s++) {
    const lk_key *k = &lk_keys[lk_slot_key[s]];
    lk_cur_addr = (uintptr_t)(lk_slots + (size_t)s * LK_SLOT);
    lk_lbuf_each(lk_key_bytes + k->off, k->len, lk_dump_frame, NULL);
  }
  lk_puts("end\n");
  lk_flush();
  syscall(SYS_close, lk_fd);
  lk_fd = -1;
}

/* The file's name for this process: its pid and ID now (a fork child has both new). */
static void lk_name_output(void)
{
  const char *dir = getenv(LK_ENV_DIR), *id = getenv(LK_ENV_VG_ID);
  char pid[24];
  int i = 23;
  long v = (long)getpid();
  size_t n;
  lk_out_path[0] = 0;
  if (!dir || !*dir || !id) return;
  pid[i] = 0;
  do { pid[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  n = strlen(dir) + strlen(pid + i) + strlen(id) + 16;
  if (n >= sizeof(lk_out_path)) return;
  strcpy(lk_out_path, dir);
  strcat(lk_out_path, "/vglua.");
  strcat(lk_out_path, pid + i);
  strcat(lk_out_path, ".");
  strcat(lk_out_path, id);
}

typedef void (*lk_exit_f)(int);

LK_EXPORT void _exit(int status)
{
  lk_dump(NULL);
  syscall(SYS_exit_group, status);
  __builtin_unreachable();
}

static void lk_vglua_child(void)
{
  lk_name_output();
}

__attribute__((constructor)) static void lk_vglua_init(void)
{
  lk_malloc_r = (lk_f1)dlsym(RTLD_NEXT, "malloc");
  lk_calloc_r = (lk_f2)dlsym(RTLD_NEXT, "calloc");
  lk_realloc_r = (lk_fr)dlsym(RTLD_NEXT, "realloc");
  lk_memalign_r = (lk_f2)dlsym(RTLD_NEXT, "memalign");
  lk_aligned_r = (lk_f2)dlsym(RTLD_NEXT, "aligned_alloc");
  lk_posix_memalign_r = (lk_fpm)dlsym(RTLD_NEXT, "posix_memalign");
  lk_valloc_r = (lk_f1)dlsym(RTLD_NEXT, "valloc");
  lk_pvalloc_r = (lk_f1)dlsym(RTLD_NEXT, "pvalloc");
  lk_name_output();
  pthread_atfork(NULL, NULL, lk_vglua_child);
  __cxa_atexit(lk_dump, NULL, NULL);
}
