/* ljleak: reading the LuaJIT VM from C while it runs a C function (the Lua frames of an allocation),
** after learning the build's layout. Shared by the tracker and the Valgrind library. */
#ifndef LK_LUAREAD_H
#define LK_LUAREAD_H

#include <stddef.h>
#include <stdint.h>

#define LK_LUA_APPROX 1   /* frame flag: location of the running trace's start, not the line */

/* A Lua stack as bytes: per frame, line (int32), flags (1 byte), name\0, short source\0. */
typedef struct lk_lbuf {
  char b[1024];
  size_t n;
  uint32_t nframes;
} lk_lbuf;

void lk_lbuf_init(lk_lbuf *lb);
void lk_lbuf_frame(lk_lbuf *lb, int line, int flags, const char *name, const char *src);

/* Called through the FFI from Lua, in three different coroutines: probe step 1, probe step 2, then
** attach. Probe returns 1 if it could look. Attach returns NULL and sets *g (the VM's global_State)
** when the layout was learnt, else why not. */
int lk_luaread_probe(uintptr_t L, int step);
const char *lk_luaread_attach(uintptr_t L, char **g);

/* The Lua frames (at most depth) of the C call the VM of global_State g is in, into lb: 1. A JIT
** trace runs: 0, and *trace is its number. Neither (no Lua, or cur_L is stale): 0, *trace 0. */
int lk_luaread_frames(char *g, lk_lbuf *lb, int depth, int32_t *trace);

/* Where the attached VM (global_State g) says what it runs: a JIT trace's number when above 0. */
volatile int32_t *lk_luaread_vmstate(char *g);

/* Calls fn on each frame of the bytes of an lk_lbuf (n bytes); returns how many. */
typedef void (*lk_lbuf_frame_fn)(int line, int flags, const char *name, const char *src, void *ud);
int lk_lbuf_each(const char *p, size_t n, lk_lbuf_frame_fn fn, void *ud);

#endif
