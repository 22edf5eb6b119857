/* ljleak tracker: what the LuaJIT VM was doing when C code allocated. The Lua frames of the
** allocation (exact in the interpreter, the trace's start when JIT code called), interned. */
#include "lk_luavm.h"
#include "ljleak.h"
#include "lk_intern.h"
#include "lk_ljalloc.h"
#include "lk_lock.h"
#include "lk_luaread.h"
#include "lk_mmap.h"
#include "lk_state.h"
#include "lk_sys.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static const char *lk_vm_why = "the program loaded no LuaJIT state";
static int lk_vm_disabled;
static int lk_lua_depth = LK_LUA_DEPTH_DEFAULT;

int lk_lua_state;               /* 0: no state attached, 1: one is open, 2: it was closed */
static LK_TLS char *lk_vm_g;   /* the attached VM's global_State, on the thread that runs it */
LK_TLS volatile int32_t *lk_vm_state;  /* ... and its vmstate */

/* -- Interned Lua stacks ---------------------------------------------------
** A Lua stack is a few frames of (line, flags, name, short source) as bytes; aux = frame count. */

static lk_itab lk_lstacks = LK_ITAB((size_t)256 << 20, (size_t)1 << 16);

void lk_luavm_init(void)
{
  const char *e = getenv(LK_ENV_LUA);
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
  lk_lbuf_init(&lb);
  lk_lbuf_frame(&lb, line, LK_LUA_APPROX, name, src);
  lk_trace_loc[tr] = lk_intern(&lk_lstacks, lb.b, lb.n, (uint16_t)lb.nframes);
  lk_hot_stale();
}

LK_EXPORT void ljleak_trace_flush(void)
{
  if (lk_trace_loc) memset(lk_trace_loc, 0, LK_MAXTRACES * sizeof(uint32_t));
  lk_hot_stale();
}

/* -- Capture ------------------------------------------------------------------ */

uint32_t lk_lua_capture(void)
{
  char *g = lk_vm_g;
  int32_t tr;
  lk_lbuf lb;
  if (LIKELY(g == NULL)) return 0;
  if (lk_luaread_frames(g, &lb, lk_lua_depth, &tr))
    return lk_intern(&lk_lstacks, lb.b, lb.n, (uint16_t)lb.nframes);
  return tr > 0 && tr < LK_MAXTRACES && lk_trace_loc ? lk_trace_loc[tr] : 0;
}

int lk_lua_stamp(uint32_t id, uint32_t serial)
{
  return lk_intern_stamp(&lk_lstacks, id, serial);
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
  const char *p = lk_intern_get(&lk_lstacks, id, &len, NULL);
  return p ? lk_lbuf_each(p, len, fn, ud) : 0;
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

LK_EXPORT int ljleak_lua_probe(uintptr_t L, int step)
{
  return lk_vm_disabled ? 0 : lk_luaread_probe(L, step);
}

static int lk_vm_fail(const char *why)
{
  lk_vm_why = why;
  lk_lua_state = 1;  /* a state is open, without frames */
  return 0;
}

LK_EXPORT int ljleak_lua_attach(uintptr_t Laddr, int depth)
{
  char *L = (char *)Laddr, *g = NULL;
  const char *why;
  if (!L) return 0;
  if (lk_vm_disabled) return lk_vm_fail(lk_vm_why);
  if ((why = lk_luaread_attach(Laddr, &g))) return lk_vm_fail(why);
  if (depth > 0) lk_lua_depth = depth > LK_LUA_DEPTH_MAX ? LK_LUA_DEPTH_MAX : depth;
  lk_vm_g = g;
  lk_vm_state = lk_luaread_vmstate(g);
  lk_hot_stale();
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

/* The global_State attached on this thread, or 0 (vm.lua: does a state that ends still have it?). */
LK_EXPORT uintptr_t ljleak_lua_attached(void)
{
  return (uintptr_t)lk_vm_g;
}

LK_EXPORT void ljleak_lua_detach(void)
{
  lk_vm_g = NULL;
  lk_vm_state = NULL;
  lk_hot_stale();
  lk_lua_state = 2;
  lk_mstate = NULL;
}
