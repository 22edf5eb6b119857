/* ljleak tracker: the LuaJIT VM as the tracker sees it. The Lua frames of an allocation
** (interned), the state's own heap (lj_alloc's chunks in use), attach and detach. */
#ifndef LK_LUAVM_H
#define LK_LUAVM_H

#include "lk_def.h"

extern int lk_lua_state;                 /* 0 none attached, 1 open, 2 closed (raw: lua_state) */
void lk_luavm_init(void);
const char *lk_lua_problem(void);        /* why Lua frames are unavailable, or NULL */
uint32_t lk_lua_capture(void);           /* Lua stack of the current allocation, 0 if none */

/* What the VM attached on this thread runs: a JIT trace's number (above 0), another state (below
** 0), or 0 when there is none. When it is not below 0, lk_lua_capture's answer depends on nothing
** else until lk_hot_gen (lk_state.h) changes. */
extern LK_TLS volatile int32_t *lk_vm_state;
static inline int32_t lk_lua_vmstate(void)
{
  volatile int32_t *s = lk_vm_state;
  return s ? *s : 0;
}
typedef void (*lk_lua_frame_fn)(int line, int flags, const char *name, const char *src, void *ud);
int lk_lua_frames(uint32_t id, lk_lua_frame_fn fn, void *ud);
int lk_lua_arena_foreach(lk_range_fn live, void *ud);   /* chunks in use; 0 if unknown */
void lk_lua_arena_outside(uintptr_t lo, uintptr_t hi, lk_range_fn fn, void *ud);
int lk_lua_stamp(uint32_t id, uint32_t serial);  /* set; 1 if it had it already */

#endif
