/* ljleak tracker: spinlocks, and the one list of every lock of the tracker, outermost first.
** Around fork the forking thread takes them all; the child resets them, the parent releases them. */
#include "lk_lock.h"

#include <sched.h>

#define LK_MAXLOCKS 16
static volatile int *lk_locks[LK_MAXLOCKS];
static int lk_nlocks;

void lk_spin_lock(volatile int *l)
{
  int spins = 0;
  while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
      if (++spins > 100) { sched_yield(); spins = 0; }
      else __builtin_ia32_pause();
    }
  }
}

void lk_spin_unlock(volatile int *l)
{
  __atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

void lk_lock_register(volatile int *l)
{
  int i;
  for (i = 0; i < lk_nlocks; i++)
    if (lk_locks[i] == l) return;
  if (lk_nlocks < LK_MAXLOCKS) lk_locks[lk_nlocks++] = l;
}

void lk_locks_take_all(void)
{
  int i;
  for (i = 0; i < lk_nlocks; i++) lk_spin_lock(lk_locks[i]);
}

void lk_locks_release_all(void)
{
  int i;
  for (i = lk_nlocks - 1; i >= 0; i--) lk_spin_unlock(lk_locks[i]);
}

void lk_locks_reset_all(void)
{
  int i;
  for (i = 0; i < lk_nlocks; i++) *lk_locks[i] = 0;
}
