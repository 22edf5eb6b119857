/* ljleak tracker: threads. Every thread's stack, parking the other threads for a check (a signal,
** or the allocator's gate), and where main() began. */
#ifndef LK_THREAD_H
#define LK_THREAD_H

#include "lk_def.h"

void lk_thread_init(void);
void lk_thread_after_fork(void);
void lk_threads_park(void);               /* stop every other known thread */
void lk_threads_unpark(void);             /* ... and let them go on (mid-run checks) */
void lk_threads_foreach_stack(lk_range_fn fn, void *ud, long *tid);  /* other threads' stacks */
int lk_threads_unstopped(void);            /* threads that did not park at the last check */
void lk_gate_wait(uintptr_t p);            /* wait while a check runs (p: a block being freed) */
int lk_threads_unstopped_list(pid_t *tids, int cap);
int lk_thread_self_stack(uintptr_t *hi);   /* top of the calling thread's stack */
extern uintptr_t lk_main_sp;              /* frame of main() */
extern volatile int lk_main_returned;

#endif
