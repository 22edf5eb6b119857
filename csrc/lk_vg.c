/* ljleak: preloaded under --engine=valgrind. Client requests for Lua code (markers in Valgrind's
** output, leak checks between busted tests) and dlclose kept a no-op, as the tracker does. */
#include <stdio.h>
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>

#include "lk_ljalloc.h"

#define LK_EXPORT __attribute__((visibility("default")))

/* Modules stay loaded: a library's globals stay roots for memcheck's leak check at exit (else a
** cache held by an ffi.load library's global shows as definitely lost) and its frames stay
** named. Their destructors run at exit, before the check. */
LK_EXPORT int dlclose(void *handle)
{
  (void)handle;
  return 0;
}

/* Non-zero when the program runs under Valgrind. */
LK_EXPORT int ljleak_vg_running(void)
{
  return (int)RUNNING_ON_VALGRIND;
}

/* A line in Valgrind's output (a <clientmsg> in its XML). */
LK_EXPORT void ljleak_vg_mark(const char *text)
{
  VALGRIND_PRINTF("%s\n", text);
}

static void lk_vg_chunk(uintptr_t lo, uintptr_t hi, int inuse, void *ud)
{
  int hide = *(int *)ud;
  if (inuse || hi <= lo) return;
  if (hide) VALGRIND_MAKE_MEM_NOACCESS(lo, hi - lo);
  else VALGRIND_MAKE_MEM_DEFINED(lo, hi - lo);
}

/* A leak check of what was lost since the last one (memcheck reports it as usual), with the free
** chunks of LuaJIT's heap hidden from it meanwhile: its scan skips memory that is not addressable,
** so a pointer left in a freed Lua object is no root, as in the tracker. ms: the Lua state's
** allocator (lua_getallocf), or NULL. out[0..3]: bytes definite, possible, reachable, suppressed
** in this check. All in one call: Lua code between hiding and showing would allocate there. */
LK_EXPORT int ljleak_vg_leak_check(void *ms, unsigned long *out)
{
  unsigned long d = 0, p = 0, r = 0, s = 0;
  int hide = 1, hidden = ms && lk_ljalloc_valid(ms);
  if (hidden) lk_ljalloc_walk(ms, lk_vg_chunk, &hide);
  VALGRIND_DO_ADDED_LEAK_CHECK;
  VALGRIND_COUNT_LEAKS(d, p, r, s);
  if (hidden) {
    hide = 0;
    lk_ljalloc_walk(ms, lk_vg_chunk, &hide);
  }
  out[0] = d;
  out[1] = p;
  out[2] = r;
  out[3] = s;
  return hidden;
}
