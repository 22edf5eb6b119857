/* ljleak: reading the LuaJIT VM from C while it runs a C function: its layout learnt from three
** probes (lk_vmlayout.h), then the frames of cur_L walked here (or by lua_getstack) and read with
** lua_getinfo, function names remembered. Shared by both libraries. */
#include "lk_luaread.h"
#include "lk_def.h"
#include "lk_vmlayout.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* lua_State's glref and cframe are at the same offsets in every LuaJIT 2.1 (x86-64 GC64); the
** global_State fields moved between builds, so they are learnt. */
#define LK_L_GLREF 16       /* lua_State.glref: global_State */
#define LK_L_BASE 32        /* lua_State.base, .top: the running frame's slots */
#define LK_L_TOP 40
#define LK_L_STACK 56       /* lua_State.stack: the bottom of the Lua stack (8-byte slots) */
#define LK_L_CFRAME 80      /* lua_State.cframe: NULL when no C frame is active */
#define LK_L_STACKSIZE 88   /* lua_State.stacksize: slots */
static int lk_g_vmstate = -1, lk_g_curl = -1, lk_g_jitbase = -1;

#define LK_RD32(p, off) (*(volatile int32_t *)((char *)(p) + (off)))
#define LK_RDP(p, off) (*(char *volatile *)((char *)(p) + (off)))

typedef struct lk_lua_Debug {  /* lua.h's lua_Debug, identical in Lua 5.1 and LuaJIT */
  int event;
  const char *name, *namewhat, *what, *source;
  int currentline, nups, linedefined, lastlinedefined;
  char short_src[60];
  int i_ci;
} lk_lua_Debug;

typedef int (*lk_getstack_f)(void *L, int level, lk_lua_Debug *ar);
typedef int (*lk_getinfo_f)(void *L, const char *what, lk_lua_Debug *ar);
static lk_getstack_f lk_getstack;
static lk_getinfo_f lk_getinfo;

/* -- Lua stacks as bytes ------------------------------------------------------ */

void lk_lbuf_init(lk_lbuf *lb)
{
  lb->n = 0;
  lb->nframes = 0;
}

void lk_lbuf_frame(lk_lbuf *lb, int line, int flags, const char *name, const char *src)
{
  size_t ln = name ? strnlen(name, 64) : 0, ls = strnlen(src, 200);
  if (lb->n + 5 + ln + 1 + ls + 1 > sizeof(lb->b)) return;
  memcpy(lb->b + lb->n, &line, 4);
  lb->b[lb->n + 4] = (char)flags;
  lb->n += 5;
  if (ln) memcpy(lb->b + lb->n, name, ln);
  lb->b[lb->n + ln] = 0;
  lb->n += ln + 1;
  memcpy(lb->b + lb->n, src, ls);
  lb->b[lb->n + ls] = 0;
  lb->n += ls + 1;
  lb->nframes++;
}

int lk_lbuf_each(const char *p, size_t n, lk_lbuf_frame_fn fn, void *ud)
{
  const char *e = p + n;
  int count = 0;
  while (p + 5 <= e) {
    int line, flags;
    const char *name, *src;
    memcpy(&line, p, 4);
    flags = (uint8_t)p[4];
    name = p + 5;
    src = name + strlen(name) + 1;
    fn(line, flags, name, src, ud);
    p = src + strlen(src) + 1;
    count++;
  }
  return count;
}

/* -- Function names, remembered --------------------------------------------------------
** lua_getinfo's "n" (how the caller named the function) decodes the caller's bytecode, and for a
** local the variable names of its whole function: most of a capture's cost. The name follows from
** the call instruction alone, and a frame's link word holds that instruction's address when the
** caller is Lua code (FRAME_LUA: the low bits clear; LuaJIT 2.1, two-slot frames). So names are
** remembered per link word, checked against the called function's source and first line (a
** function freed and another made at the same address). Other frames ask lua_getinfo each time. */

#define LK_NAMES 4096
typedef struct lk_name {
  uint64_t link;
  const char *src;
  int linedefined;
  int has;             /* the name is not NULL */
  char name[68];
} lk_name;
/* A slot per hash of a link word, naming its entry; entries handed out in order, so that a
** process touches the pages of as many entries as it met call instructions (slots straight into
** 384 KiB of entries cost a page fault for nearly every new one: a busted suite, about 90). */
typedef struct lk_names_map {
  uint16_t slot[LK_NAMES];   /* 1 + the entry of the link words of this hash; 0: none yet */
  uint32_t used;             /* entries handed out (at most one a slot) */
  lk_name entry[LK_NAMES];
} lk_names_map;
static lk_names_map *lk_names; /* mapped at attach; NULL: ask every time */
static int lk_walk_own;       /* walk the frames here (see "Walking the frames"), not lua_getstack */
static volatile int lk_names_busy;

/* At attach: the name cache (emptied for another VM), and whether the frames are walked here; both
** only where lua_State's stack fields are where this layout has them. */
static void lk_frames_setup(char *L)
{
  char *stack = LK_RDP(L, LK_L_STACK), *base = LK_RDP(L, LK_L_BASE), *top = LK_RDP(L, LK_L_TOP);
  uint32_t size = (uint32_t)LK_RD32(L, LK_L_STACKSIZE);
  if (!lk_names) {  /* a raw mmap: the tracker's memory, not a mapping of the program's (a root) */
    void *p = (void *)syscall(SYS_mmap, NULL, sizeof(lk_names_map), PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    lk_names = p;
  } else {   /* another VM: its functions are others (an entry is emptied when handed out again) */
    memset(lk_names->slot, 0, sizeof(lk_names->slot));
    lk_names->used = 0;
  }
  /* The stack fields where this layout has them (the coroutine attaching runs a C call) */
  if (!(stack && stack <= base && base <= top && top <= stack + (size_t)size * 8)) {
    syscall(SYS_munmap, lk_names, sizeof(lk_names_map));
    lk_names = NULL;
    lk_walk_own = 0;
  } else {
    const char *e = getenv(LK_ENV_LUA_WALK);
    lk_walk_own = !(e && strcmp(e, "getstack") == 0);
  }
}

/* The name of the function of AR's frame (lua_getstack's), NULL if none; copied into BUF. */
static const char *lk_frame_name(char *L, lk_lua_Debug *ar, char *buf, size_t cap)
{
  uint64_t link = 0;
  uint32_t slot = 0;
  int cached = 0;
  if (lk_names) {
    const char *stack = LK_RDP(L, LK_L_STACK);
    memcpy(&link, stack + 8 * (size_t)((uint32_t)ar->i_ci & 0xffff), 8);
    if (link && (link & 3) == 0) {  /* FRAME_LUA: the caller's call instruction */
      uint64_t h = (link >> 2) * 0x9e3779b97f4a7c15ull;
      slot = (uint32_t)(h >> 52);
      cached = 1;
    }
  }
  if (cached && !__atomic_exchange_n(&lk_names_busy, 1, __ATOMIC_ACQUIRE)) {  /* else: no waiting */
    const char *name = NULL;
    lk_name *e;
    int hit;
    uint32_t k = lk_names->slot[slot];
    if (!k) {   /* a new slot: the next entry, emptied (it may be another VM's) */
      k = ++lk_names->used;
      lk_names->slot[slot] = (uint16_t)k;
      lk_names->entry[k - 1].link = 0;
    }
    e = &lk_names->entry[k - 1];
    hit = e->link == link && e->src == ar->source && e->linedefined == ar->linedefined;
    if (!hit) {
      lk_getinfo(L, "n", ar);
      e->link = link;
      e->src = ar->source;
      e->linedefined = ar->linedefined;
      e->has = ar->name != NULL;
      if (ar->name) {
        size_t n = strnlen(ar->name, sizeof(e->name) - 1);
        memcpy(e->name, ar->name, n);
        e->name[n] = 0;
      }
    }
    if (e->has) {
      size_t n = strnlen(e->name, cap - 1);
      memcpy(buf, e->name, n);
      buf[n] = 0;
      name = buf;
    }
    __atomic_store_n(&lk_names_busy, 0, __ATOMIC_RELEASE);
    return name;
  }
  lk_getinfo(L, "n", ar);
  return ar->name;
}

/* -- Learning the layout --------------------------------------------------------- */

static lk_vm_probe lk_probe;
static char *lk_probe_g;

int lk_luaread_probe(uintptr_t Laddr, int step)
{
  char *L = (char *)Laddr, *g;
  if (!L) return 0;
  g = LK_RDP(L, LK_L_GLREF);
  if (!g || !LK_RDP(L, LK_L_CFRAME)) return 0;
  if (step == 1) {
    lk_probe_g = g;
    lk_vm_probe_first(&lk_probe, g, L);
  } else {
    if (g != lk_probe_g) return 0;  /* another VM: glref is not where it should be */
    lk_vm_probe_next(&lk_probe, g, L);
  }
  return 1;
}

const char *lk_luaread_attach(uintptr_t Laddr, char **gp)
{
  char *L = (char *)Laddr, *g;
  lk_vm_layout lay;
  const char *why;
  if (!lk_getstack) {
    lk_getstack = (lk_getstack_f)dlsym(RTLD_DEFAULT, "lua_getstack");
    lk_getinfo = (lk_getinfo_f)dlsym(RTLD_DEFAULT, "lua_getinfo");
  }
  if (!lk_getstack || !lk_getinfo) return "lua_getstack/lua_getinfo are not exported";
  g = L ? LK_RDP(L, LK_L_GLREF) : NULL;
  if (!g || g != lk_probe_g) return "lua_State.glref is not at the offset of LuaJIT 2.1";
  lk_vm_probe_next(&lk_probe, g, L);
  why = lk_vm_layout_of(&lk_probe, g, &lay);
  if (why) return why;
  lk_g_curl = lay.curl;
  lk_g_vmstate = lay.vmstate;
  lk_g_jitbase = lay.jitbase;
  lk_frames_setup(L);
  *gp = g;
  return NULL;
}

/* -- Walking the frames ---------------------------------------------------------------
** lua_getstack(L, level) walks from the top down to LEVEL at every call: the frames of one
** capture cost the square of its depth. The same walk done once (lj_debug_frame's rules, LuaJIT
** 2.1 with two-slot frames: the function at frame[-1], the link at frame[0]; a Lua frame's link is
** the caller's return address, whose call instruction's A operand is the frame's distance; other
** links carry the distance in bytes; a dummy frame (its function is L itself) is no level; a vararg
** function's pseudo-frame is a level and the frame below it is not) gives each level's i_ci for
** lua_getinfo. Used where lua_State's stack fields were found where this layout has them, and
** unless LJLEAK_LUA_WALK=getstack (t/luawalk_spec.lua compares the two). */

#define LK_GCVMASK (((uint64_t)1 << 47) - 1)   /* a GC64 TValue's object pointer */

typedef struct lk_walk {
  const char *L, *stack, *top, *f, *next;
  int skip;   /* the frame below a vararg pseudo-frame is no level */
} lk_walk;

static void lk_walk_init(lk_walk *w, char *L)
{
  w->L = L;
  w->stack = LK_RDP(L, LK_L_STACK);
  w->top = w->stack + (size_t)(uint32_t)LK_RD32(L, LK_L_STACKSIZE) * 8;
  w->f = w->next = LK_RDP(L, LK_L_BASE) - 8;
  w->skip = 0;
}

/* The next level's i_ci into AR (what lua_getstack would set); 0 after the last. */
static int lk_walk_next(lk_walk *w, lk_lua_Debug *ar)
{
  const char *bot = w->stack + 8;
  while (w->f > bot && w->f < w->top) {
    const char *f = w->f, *prev;
    int64_t ftsz;
    uint64_t fn;
    int level = 0;
    memcpy(&ftsz, f, 8);
    memcpy(&fn, f - 8, 8);
    if ((fn & LK_GCVMASK) != (uint64_t)(uintptr_t)w->L) {  /* not a dummy frame */
      if (w->skip) w->skip = 0;
      else {
        level = 1;
        ar->i_ci = (int)(((w->next - f) / 8) << 16) + (int)((f - w->stack) / 8);
        if ((ftsz & 7) == 3) w->skip = 1;   /* FRAME_VARG */
      }
    }
    if ((ftsz & 3) == 0) {  /* FRAME_LUA: the caller's return address */
      uint32_t ins;
      if (!ftsz) return 0;
      memcpy(&ins, (const char *)(intptr_t)ftsz - 4, 4);
      prev = f - 8 * (2 + ((ins >> 8) & 0xff));
    } else {
      prev = f - (ftsz & ~(int64_t)7);
    }
    if (prev >= f) return 0;  /* not a walk down: stop rather than loop */
    w->next = f;
    w->f = prev;
    if (level) return 1;
  }
  return 0;
}

/* -- Reading the frames -------------------------------------------------------------- */

volatile int32_t *lk_luaread_vmstate(char *g)
{
  return (volatile int32_t *)(g + lk_g_vmstate);
}

int lk_luaread_frames(char *g, lk_lbuf *lb, int depth, int32_t *trace)
{
  char *L;
  int32_t st = LK_RD32(g, lk_g_vmstate);
  int level, got = 0;
  const char *cfun = NULL, *name;
  char cbuf[68], nbuf[68];
  lk_lua_Debug ar;
  lk_walk w;
  *trace = 0;
  if (st > 0) {  /* a trace is running */
    *trace = st;
    return 0;
  }
  if (st != LK_VMST_C || LK_RDP(g, lk_g_jitbase)) return 0;
  L = LK_RDP(g, lk_g_curl);
  if (!L || !LK_RDP(L, LK_L_CFRAME)) return 0;  /* no C frame: cur_L is stale */
  lk_lbuf_init(lb);
  if (lk_walk_own) lk_walk_init(&w, L);
  else memset(&w, 0, sizeof(w));
  for (level = 0; got < depth && level < 64; level++) {
    memset(&ar, 0, sizeof(ar));
    if (!(lk_walk_own ? lk_walk_next(&w, &ar) : lk_getstack(L, level, &ar))) break;
    if (!lk_getinfo(L, "Sl", &ar)) break;
    if (ar.what && ar.what[0] == 'C') {  /* a C function between Lua frames (pcall...) */
      cfun = lk_frame_name(L, &ar, cbuf, sizeof(cbuf));
      if (!cfun) cfun = "?";
      continue;
    }
    if (cfun && got) { lk_lbuf_frame(lb, -1, 0, cfun, "[C]"); got++; }
    cfun = NULL;
    name = ar.what && ar.what[0] == 'm' ? "main chunk" : lk_frame_name(L, &ar, nbuf, sizeof(nbuf));
    lk_lbuf_frame(lb, ar.currentline, 0, name, ar.short_src);
    got++;
  }
  return lb->nframes > 0;
}
