/* ljleak tracker: the process's state as every part sees it: is recording on, is this thread
** inside the tracker, where the report goes, which process this is. */
#ifndef LK_STATE_H
#define LK_STATE_H

#include "lk_def.h"

extern volatile int lk_on;   /* recording enabled: after init, before the exit check */
#define LK_ON_RECORD 1       /* lk_on: allocations are recorded */
#define LK_ON_GATE 2         /* lk_on: a check runs: other threads wait at the allocator's door */
extern LK_TLS int lk_busy;   /* this thread is inside the tracker: do not record */
extern LK_TLS int lk_paused; /* ...of which ljleak_pause: the program's own work, not ours */
extern const char *lk_dir;   /* LJLEAK_DIR: where the raw report goes, or NULL */
extern pid_t lk_pid;         /* this process (updated in a fork child, not in a vfork child) */

void lk_state_init(void);    /* from the environment; at start-up */
void lk_state_after_fork(void);

#endif
