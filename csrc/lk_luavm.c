/* ljleak tracker: what the LuaJIT VM was doing when C code allocated. The Lua frames of the
** allocation (exact in the interpreter, the trace's start when JIT code called), interned. */
#include "lk_def.h"
#include "lk_ljalloc.h"
#include "lk_vmlayout.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* -- LuaJIT internals (x86-64 GC64) ----------------------------------------------------
** lua_State's glref and cframe are at the same offsets in every LuaJIT 2.1; the global_State
** fields moved between builds (cur_L by 8 bytes in late 2025), so they are learnt when the program
** attaches (ljleak_lua_probe, lk_vmlayout.h). If they cannot be, Lua frames stay off and the
** report says why. */

#define LK_L_GLREF 16       /* lua_State.glref: global_State */
#define LK_L_CFRAME 80      /* lua_State.cframe: NULL when no C frame is active */
static int lk_g_vmstate = -1, lk_g_curl = -1, lk_g_jitbase = -1;
static const char *lk_vm_why = "the program loaded no LuaJIT state";
static int lk_vm_disabled;

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
static int lk_lua_depth = 6;

int lk_lua_state;               /* 0: no state attached, 1: one is open, 2: it was closed */
static LK_TLS char *lk_vm_g;   /* the attached VM's global_State, on the thread that runs it */

#define LK_RD32(p, off) (*(volatile int32_t *)((char *)(p) + (off)))
#define LK_RDP(p, off) (*(char *volatile *)((char *)(p) + (off)))

/* -- Interned Lua stacks ---------------------------------------------------
** A Lua stack is a few frames of (line, flags, name, short source) as bytes; aux = frame count. */

static lk_itab lk_lstacks = LK_ITAB((size_t)256 << 20, (size_t)1 << 16);

void lk_luavm_init(void)
{
  const char *e = getenv("LJLEAK_LUA");
  lk_lock_register(&lk_lstacks.lock);
  if (e && e[0] == '0') {
    lk_vm_disabled = 1;
    lk_vm_why = "disabled by LJLEAK_LUA=0";
  }
}

/* Why allocations get no Lua frames (or LuaJIT's heap is not walked), for the report; NULL if they
** do, or if no Lua state was ever seen. */
const char *lk_lua_problem(void)
{
  return lk_lua_state == 0 && !lk_vm_disabled ? NULL : lk_vm_why;
}

typedef struct lk_lbuf {
  char b[1024];
  size_t n;
  uint32_t nframes;
} lk_lbuf;

static void lk_lbuf_frame(lk_lbuf *lb, int line, int flags, const char *name, const char *src)
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

/* -- JIT traces -------------------------------------------------------------
** The Lua side (jit.attach) tells where each trace starts. An allocation made by compiled code
** gets that location, flagged approximate: the exact line is not known safely there. */

#define LK_MAXTRACES 65536
static uint32_t *lk_trace_loc;   /* trace number -> Lua stack id */

LK_EXPORT void ljleak_trace_start(int tr, const char *src, int line, const char *name)
{
  lk_lbuf lb;
  if (tr <= 0 || tr >= LK_MAXTRACES || !src) return;
  if (!lk_trace_loc) lk_trace_loc = lk_sysmap(LK_MAXTRACES * sizeof(uint32_t));
  if (!lk_trace_loc) return;
  lb.n = 0;
  lb.nframes = 0;
  lk_lbuf_frame(&lb, line, LK_LUA_APPROX, name, src);
  lk_trace_loc[tr] = lk_intern(&lk_lstacks, lb.b, lb.n, (uint16_t)lb.nframes);
}

LK_EXPORT void ljleak_trace_flush(void)
{
  if (lk_trace_loc) memset(lk_trace_loc, 0, LK_MAXTRACES * sizeof(uint32_t));
}

/* -- Capture ------------------------------------------------------------------ */

uint32_t lk_lua_capture(void)
{
  char *g = lk_vm_g, *L;
  int32_t st;
  int level, got = 0;
  const char *cfun = NULL;
  lk_lbuf lb;
  lk_lua_Debug ar;
  if (LIKELY(g == NULL)) return 0;
  st = LK_RD32(g, lk_g_vmstate);
  if (st > 0) {  /* a trace is running */
    return lk_trace_loc && st < LK_MAXTRACES ? lk_trace_loc[st] : 0;
  }
  if (st != LK_VMST_C || LK_RDP(g, lk_g_jitbase)) return 0;
  L = LK_RDP(g, lk_g_curl);
  if (!L || !LK_RDP(L, LK_L_CFRAME)) return 0;  /* no C frame: cur_L is stale */
  lb.n = 0;
  lb.nframes = 0;
  for (level = 0; got < lk_lua_depth && level < 64; level++) {
    memset(&ar, 0, sizeof(ar));
    if (!lk_getstack(L, level, &ar)) break;
    if (!lk_getinfo(L, "Sln", &ar)) break;
    if (ar.what && ar.what[0] == 'C') {  /* a C function between Lua frames (pcall...) */
      cfun = ar.name ? ar.name : "?";
      continue;
    }
    if (cfun && got) { lk_lbuf_frame(&lb, -1, 0, cfun, "[C]"); got++; }
    cfun = NULL;
    lk_lbuf_frame(&lb, ar.currentline, 0, ar.what && ar.what[0] == 'm' ? "main chunk" : ar.name,
                  ar.short_src);
    got++;
  }
  return lb.nframes ? lk_intern(&lk_lstacks, lb.b, lb.n, (uint16_t)lb.nframes) : 0;
}

int lk_lua_mark(uint32_t id)
{
  return lk_intern_mark(&lk_lstacks, id);
}

/* The Lua stack of the FFI call to this very function: where a Lua line is, cheaply. */
LK_EXPORT uint32_t ljleak_here(void)
{
  uint32_t id;
  lk_busy++;
  id = lk_lua_capture();
  lk_busy--;
  return id;
}

/* Iterate a Lua stack's frames for the report. */
int lk_lua_frames(uint32_t id, lk_lua_frame_fn fn, void *ud)
{
  size_t len = 0;
  uint16_t nframes = 0;
  const char *p = lk_intern_get(&lk_lstacks, id, &len, &nframes), *e;
  if (!p) return 0;
  e = p + len;
  while (p + 5 <= e) {
    int line, flags;
    const char *name, *src;
    memcpy(&line, p, 4);
    flags = (uint8_t)p[4];
    name = p + 5;
    src = name + strlen(name) + 1;
    fn(line, flags, name, src, ud);
    p = src + strlen(src) + 1;
  }
  return nframes;
}

/* -- LuaJIT's GC arena ---------------------------------------------------------
** lj_alloc.c (a dlmalloc): the state's mstate lists its segments; chunks carry size and in-use
** bits. Scanning only chunks in use means a pointer left in a freed Lua object is no root. */

typedef void *(*lk_getallocf_f)(void *L, void **ud);
static char *lk_mstate;       /* the attached state's allocator, if it is lj_alloc's */

static int lk_arena_valid(char *ms, int stopped)
{
  uintptr_t base = (uintptr_t)LK_MS_PTR(ms, LK_MS_SEG);
  return lk_ljalloc_valid(ms) && (stopped ? lk_foreign_find_stopped(base) : lk_foreign_find(base, NULL, NULL));
}

typedef struct { lk_range_fn live; void *ud; } lk_live_ud;

static void lk_arena_chunk(uintptr_t lo, uintptr_t hi, int inuse, void *ud)
{
  lk_live_ud *u = ud;
  if (inuse) u->live(lo, hi, u->ud);
}

/* Calls live on the payload of every chunk in use. Returns 0 if the arena is unknown (the caller
** then scans the mappings whole). */
int lk_lua_arena_foreach(lk_range_fn live, void *ud)
{
  lk_live_ud u = { live, ud };
  if (!lk_mstate || !lk_arena_valid(lk_mstate, 1)) return 0;  /* during a scan */
  lk_ljalloc_walk(lk_mstate, lk_arena_chunk, &u);
  return 1;
}

/* Calls fn on the parts of [lo, hi) outside the arena's segments. */
void lk_lua_arena_outside(uintptr_t lo, uintptr_t hi, lk_range_fn fn, void *ud)
{
  char *ms = lk_mstate, *seg;
  int nseg = 0;
  if (ms) {
    for (seg = ms + LK_MS_SEG; seg && nseg < 100000; seg = LK_MS_PTR(seg, 16), nseg++) {
      uintptr_t b = (uintptr_t)LK_MS_PTR(seg, 0), e = b + LK_MS_SIZE(seg, 8);
      if (!b) break;
      if (b < hi && e > lo) {  /* overlap: recurse on what is left on each side */
        if (lo < b) lk_lua_arena_outside(lo, b, fn, ud);
        if (e < hi) lk_lua_arena_outside(e, hi, fn, ud);
        return;
      }
    }
  }
  fn(lo, hi, ud);
}

/* -- Attaching a Lua state ------------------------------------------------------
** `require "ljleak.vm"` calls ljleak_lua_probe through the FFI from two (or more) coroutines, step
** 1 first, then ljleak_lua_attach from a third. Each call runs inside a C function called from Lua:
** cur_L is the caller's lua_State and vmstate says "C". */

static lk_vm_probe lk_probe;
static char *lk_probe_g;

LK_EXPORT int ljleak_lua_probe(uintptr_t Laddr, int step)
{
  char *L = (char *)Laddr, *g;
  if (!L || lk_vm_disabled) return 0;
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

static int lk_vm_fail(const char *why)
{
  lk_vm_why = why;
  lk_lua_state = 1;  /* a state is open, without frames */
  return 0;
}

LK_EXPORT int ljleak_lua_attach(uintptr_t Laddr, int depth)
{
  char *L = (char *)Laddr, *g;
  lk_vm_layout lay;
  const char *why;
  if (!L) return 0;
  if (lk_vm_disabled) return lk_vm_fail(lk_vm_why);
  if (!lk_getstack) {
    lk_getstack = (lk_getstack_f)dlsym(RTLD_DEFAULT, "lua_getstack");
    lk_getinfo = (lk_getinfo_f)dlsym(RTLD_DEFAULT, "lua_getinfo");
  }
  if (!lk_getstack || !lk_getinfo) return lk_vm_fail("lua_getstack/lua_getinfo are not exported");
  g = LK_RDP(L, LK_L_GLREF);
  if (!g || g != lk_probe_g) return lk_vm_fail("lua_State.glref is not at the offset of LuaJIT 2.1");
  lk_vm_probe_next(&lk_probe, g, L);
  why = lk_vm_layout_of(&lk_probe, g, &lay);
  if (why) return lk_vm_fail(why);
  lk_g_curl = lay.curl;
  lk_g_vmstate = lay.vmstate;
  lk_g_jitbase = lay.jitbase;
  if (depth > 0) lk_lua_depth = depth > 16 ? 16 : depth;
  lk_vm_g = g;
  lk_lua_state = 1;
  lk_vm_why = NULL;
  {
    lk_getallocf_f getallocf = (lk_getallocf_f)dlsym(RTLD_DEFAULT, "lua_getallocf");
    void *ud = NULL;
    if (getallocf) getallocf(L, &ud);
    lk_mstate = ud && lk_arena_valid(ud, 0) ? ud : NULL;
    if (!lk_mstate)
      lk_vm_why = "LuaJIT's own heap (lj_alloc) is not recognised: it is scanned whole, so stale "
                  "pointers in freed Lua objects may hide leaks";
  }
  return 1;
}

LK_EXPORT void ljleak_lua_detach(void)
{
  lk_vm_g = NULL;
  lk_lua_state = 2;
  lk_mstate = NULL;
}
