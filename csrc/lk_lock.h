/* ljleak tracker: spinlocks, and the one list of every tracker lock, taken around fork so that a
** child never inherits a lock another thread held. */
#ifndef LK_LOCK_H
#define LK_LOCK_H

void lk_spin_lock(volatile int *l);
void lk_spin_unlock(volatile int *l);
void lk_lock_register(volatile int *l);  /* at init, outermost first */
void lk_locks_take_all(void);            /* fork: prepare */
void lk_locks_release_all(void);         /* fork: parent */
void lk_locks_reset_all(void);           /* fork: child */

#endif
