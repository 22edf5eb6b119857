/* ljleak tracker: the process's state (recording on, inside the tracker, report folder, pid),
** owned here and read by every part. */
#include "lk_state.h"

#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile int lk_on;
LK_TLS lk_thread_state lk_self;
volatile unsigned lk_hot_gen;
volatile unsigned lk_code_gen;
const char *lk_dir;
pid_t lk_pid;

void lk_state_init(void)
{
  static char dir[4000];
  const char *d = getenv(LK_ENV_DIR);
  if (d && *d && strlen(d) < sizeof(dir)) lk_dir = strcpy(dir, d);  /* programs rewrite environ */
  lk_pid = (pid_t)syscall(SYS_getpid);
}

void lk_set_on(int on)
{
  __atomic_store_n(&lk_on, on, __ATOMIC_RELEASE);
  lk_hot_stale();
}

void lk_state_after_fork(void)
{
  lk_pid = (pid_t)syscall(SYS_getpid);
}
