/* ljleak tracker: the process's state as every part sees it: is recording on, is this thread
** inside the tracker, where the report goes, which process this is. */
#ifndef LK_STATE_H
#define LK_STATE_H

#include "lk_def.h"

extern volatile int lk_on;   /* recording enabled: after init, before the exit check */
#define LK_ON_RECORD 1       /* lk_on: allocations are recorded */
#define LK_ON_GATE 2         /* lk_on: a check runs: other threads wait at the allocator's door */
extern const char *lk_dir;   /* LJLEAK_DIR: where the raw report goes, or NULL */
extern pid_t lk_pid;         /* this process (updated in a fork child, not in a vfork child) */

void lk_state_init(void);    /* from the environment; at start-up */
void lk_state_after_fork(void);
void lk_set_on(int on);      /* lk_on = on (and what the hot path remembers is stale) */

/* -- This thread ----------------------------------------------------------------------------
** What the malloc family reads of the calling thread, in one thread-local struct (one address to
** find on the hot path): whether it is inside the tracker, and the memos that lk_table.c (the
** leaves used last) and lk_stack.c (the last site made from JIT code) own and explain. */
#define LK_LEAF_WAYS 16      /* leaves of the live-block table remembered per thread (lk_table.h) */
typedef struct lk_thread_state {
  int busy;                  /* this thread is inside the tracker: do not record */
  int paused;                /* ...of which ljleak_pause: the program's own work, not ours */
  struct {                   /* lk_table.h */
    uintptr_t key;
    uint64_t *slots;
  } leaf[LK_LEAF_WAYS];
  uintptr_t stack_lo, stack_hi;  /* its stack, for lk_unwind.c (lk_thread.c sets them; 0: unknown) */
  struct {                   /* lk_stack.h */
    uintptr_t key;
    const volatile int32_t *vmp;
    int32_t vmstate;
    unsigned gen;
    uint32_t site;
  } site;
} lk_thread_state;
extern LK_TLS lk_thread_state lk_self;
#define lk_busy (lk_self.busy)
#define lk_paused (lk_self.paused)

/* Bumped whenever what a thread's hot path remembers may be stale (lk_stack.h's site memo):
** recording turned on or off, a foreign mapping gone, a trace started or traces flushed, a Lua
** state attached or detached, the context changed. */
extern volatile unsigned lk_hot_gen;
extern volatile unsigned lk_code_gen;   /* bumped when loaded code may be gone (a real dlclose) */
static inline void lk_hot_stale(void) { __atomic_add_fetch(&lk_hot_gen, 1, __ATOMIC_RELEASE); }

#endif
