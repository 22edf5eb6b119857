/* ljleak tracker: threads. Knows every thread's stack (pthread_create wrapper), parks the other
** threads at exit so their stacks and registers can be scanned, and notes where main() began. */
#include "lk_thread.h"
#include "lk_lock.h"
#include "lk_maps.h"
#include "lk_state.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LK_MAXTHREADS 4096
typedef struct lk_thread {
  volatile int used;
  pid_t tid;
  uintptr_t lo, hi;          /* stack bounds, including static TLS and the thread descriptor */
  volatile uintptr_t sp;     /* where it was parked */
  volatile int parked;       /* 1: in the park signal's handler; 2: at the allocator's gate */
  int unstopped;             /* did not park at the last check (signals blocked, or too slow) */
} lk_thread;

static lk_thread lk_threads[LK_MAXTHREADS];
static volatile int lk_nthreads;   /* slots ever used: the loops over threads stop there */
/* Threads created and not yet in the list: a park waits for them (their stack holds the argument
** they were given, which may be all that holds a block). */
static volatile int lk_starting;
static volatile int lk_threads_lock;
uintptr_t lk_main_sp;
volatile int lk_main_returned;

static pid_t lk_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static lk_thread *lk_thread_add(pid_t tid, uintptr_t lo, uintptr_t hi)
{
  int i;
  lk_thread *t = NULL;
  lk_spin_lock(&lk_threads_lock);
  for (i = 0; i < LK_MAXTHREADS; i++) {
    if (!lk_threads[i].used) {
      t = &lk_threads[i];
      t->tid = tid;
      t->lo = lo;
      t->hi = hi;
      t->sp = 0;
      t->parked = 0;
      t->unstopped = 0;
      t->used = 1;
      if (i >= lk_nthreads) __atomic_store_n(&lk_nthreads, i + 1, __ATOMIC_RELEASE);
      break;
    }
  }
  lk_spin_unlock(&lk_threads_lock);
  return t;
}

static LK_TLS lk_thread *lk_thread_me;  /* this thread's entry */

/* The main thread's entry: its stack is [stack] in /proc/self/maps, as a check last read it
** (lk_maps_load, before every scan): not read at start-up (a short process pays for every
** read), and the stack may have grown down since. */
static lk_thread *lk_thread_main;

static void lk_thread_main_bounds(void)
{
  uintptr_t lo, hi;
  if (lk_thread_main && lk_thread_main->used && lk_maps_stack_top(&lo, &hi)) {
    lk_thread_main->lo = lo;
    lk_thread_main->hi = hi;
  }
}

/* -- pthread_create --------------------------------------------------------- */

typedef int (*lk_pthread_create_f)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static lk_pthread_create_f lk_real_pthread_create;
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

typedef struct { void *(*fn)(void *); void *arg; } lk_start;

static void lk_thread_gone(void *t)
{
  ((lk_thread *)t)->used = 0;
}

static void *lk_thread_start(void *p)
{
  lk_start st = *(lk_start *)p;
  pthread_attr_t a;
  void *stk = NULL, *ret;
  size_t sz = 0;
  lk_thread *t;
  __libc_free(p);
  lk_busy++;
  if (pthread_getattr_np(pthread_self(), &a) == 0) {
    pthread_attr_getstack(&a, &stk, &sz);
    pthread_attr_destroy(&a);
  }
  lk_busy--;
  lk_self.stack_lo = (uintptr_t)stk;   /* lk_unwind.c's bounds */
  lk_self.stack_hi = stk ? (uintptr_t)stk + sz : 0;
  t = lk_thread_me = lk_thread_add(lk_gettid(), (uintptr_t)stk, (uintptr_t)stk + sz);
  __atomic_sub_fetch(&lk_starting, 1, __ATOMIC_RELEASE);
  /* A check that began meanwhile did not signal this thread: it waits here, parked, st on its stack. */
  if (UNLIKELY(__atomic_load_n(&lk_on, __ATOMIC_ACQUIRE) == LK_ON_GATE)) lk_gate_wait((uintptr_t)st.arg);
  if (!t) return st.fn(st.arg);
  pthread_cleanup_push(lk_thread_gone, t);
  ret = st.fn(st.arg);
  pthread_cleanup_pop(1);
  return ret;
}

LK_EXPORT int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
  lk_start *st;
  if (!lk_real_pthread_create)
    lk_real_pthread_create = (lk_pthread_create_f)dlsym(RTLD_NEXT, "pthread_create");
  st = __libc_malloc(sizeof(*st));
  if (!st) return lk_real_pthread_create(th, attr, fn, arg);
  st->fn = fn;
  st->arg = arg;
  __atomic_add_fetch(&lk_starting, 1, __ATOMIC_ACQ_REL);
  {
    int r = lk_real_pthread_create(th, attr, lk_thread_start, st);
    if (r) {
      __atomic_sub_fetch(&lk_starting, 1, __ATOMIC_RELEASE);
      __libc_free(st);
    }
    return r;
  }
}

/* -- main() ----------------------------------------------------------------
** Wrapping main tells where its frame began: once it has returned, the stack below is dead and
** must not be scanned (stale copies of pointers would hide leaks). */

typedef int (*lk_main_f)(int, char **, char **);
typedef int (*lk_start_main_f)(lk_main_f, int, char **, void (*)(void), void (*)(void),
                               void (*)(void), void *);
static lk_main_f lk_real_main;

static NOINLINE int lk_main(int argc, char **argv, char **envp)
{
  int r;
  lk_main_sp = (uintptr_t)__builtin_frame_address(0);
  r = lk_real_main(argc, argv, envp);
  lk_main_returned = 1;
  return r;
}

LK_EXPORT int __libc_start_main(lk_main_f main, int argc, char **argv, void (*init)(void),
                                void (*fini)(void), void (*rtld_fini)(void), void *stack_end)
{
  lk_start_main_f real = (lk_start_main_f)dlsym(RTLD_NEXT, "__libc_start_main");
  lk_real_main = main;
  return real(lk_main, argc, argv, init, fini, rtld_fini, stack_end);
}

/* -- Parking ---------------------------------------------------------------
** At exit every other thread gets a signal whose handler records its stack pointer and waits
** forever; the kernel saved its registers in the signal frame, on that same stack. */

#define LK_PARK_SIG (SIGRTMAX - 2)

static volatile int lk_release;  /* parked threads may go on (mid-run checks; never at exit) */
static struct sigaction lk_park_old;  /* the program's own action for the signal */

static volatile int lk_parking;     /* a park is under way: the signal is ours */

static void lk_park_handler(int sig, siginfo_t *si, void *uc)
{
  lk_thread *t = lk_thread_me;
  volatile uintptr_t here = 0;
  struct timespec ts = { 0, 200000 };
  int saved = errno;
  if (!__atomic_load_n(&lk_parking, __ATOMIC_ACQUIRE)) {  /* the program's own use of the signal */
    if (lk_park_old.sa_flags & SA_SIGINFO) {
      if (lk_park_old.sa_sigaction) lk_park_old.sa_sigaction(sig, si, uc);
    } else if (lk_park_old.sa_handler != SIG_DFL && lk_park_old.sa_handler != SIG_IGN) {
      lk_park_old.sa_handler(sig);
    }
    return;
  }
  if (!t) return;
  t->sp = (uintptr_t)&here;
  __atomic_store_n(&t->parked, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&lk_release, __ATOMIC_ACQUIRE)) nanosleep(&ts, NULL);
  __atomic_store_n(&t->parked, 0, __ATOMIC_RELEASE);
  errno = saved;
}

/* -- The allocator's gate -----------------------------------------------------
** While a check runs (lk_on == LK_ON_GATE), a thread that calls malloc, free or realloc waits
** here: a thread that blocks the park signal is stopped all the same at its next allocation, with
** its registers saved in this frame and the block it was freeing on its stack. */

LK_HIDDEN NOINLINE void lk_gate_wait(uintptr_t p)
{
  volatile uintptr_t keep = p;     /* the block being freed stays visible on this stack */
  struct timespec ts = { 0, 200000 };
  lk_thread *t = lk_thread_me;
  uintptr_t sp;
  __builtin_unwind_init();         /* callee-saved registers spill into this frame */
  __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
  if (t && !t->parked) {
    t->sp = sp;
    __atomic_store_n(&t->parked, 2, __ATOMIC_RELEASE);
  }
  while (__atomic_load_n(&lk_on, __ATOMIC_ACQUIRE) == LK_ON_GATE) nanosleep(&ts, NULL);
  if (t && t->parked == 2) __atomic_store_n(&t->parked, 0, __ATOMIC_RELEASE);
  (void)keep;
}

/* Let parked threads go on, and wait until they have left the handler. */
void lk_threads_unpark(void)
{
  struct timespec ts = { 0, 200000 };
  int i, rounds;
  __atomic_store_n(&lk_parking, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&lk_release, 1, __ATOMIC_RELEASE);
  for (rounds = 0; rounds < 5000; rounds++) {
    int waiting = 0;
    for (i = 0; i < lk_nthreads; i++)
      if (lk_threads[i].used && __atomic_load_n(&lk_threads[i].parked, __ATOMIC_ACQUIRE)) waiting++;
    if (!waiting) break;
    nanosleep(&ts, NULL);
  }
}

/* Reads /proc/self/task/TID/FILE into buf (NUL-terminated); its length, or -1. */
static long lk_task_file(pid_t tid, const char *file, char *buf, size_t size)
{
  char path[64];
  char *p = path;
  const char *q;
  char num[12];
  int i = 11, fd;
  long n;
  pid_t v = tid;
  num[i] = 0;
  do { num[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  for (q = "/proc/self/task/"; *q; q++) *p++ = *q;
  for (q = num + i; *q; q++) *p++ = *q;
  *p++ = '/';
  for (q = file; *q && p < path + sizeof(path) - 1; q++) *p++ = *q;
  *p = 0;
  fd = (int)syscall(SYS_open, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  n = (long)syscall(SYS_read, fd, buf, size - 1);
  syscall(SYS_close, fd);
  if (n < 0) return -1;
  buf[n] = 0;
  return n;
}

/* Does thread TID block (or ignore) the park signal? Then waiting for it is pointless. */
static int lk_task_blocks_park(pid_t tid)
{
  char buf[2048], *p;
  int bit = LK_PARK_SIG - 1, digit;
  if (lk_task_file(tid, "status", buf, sizeof(buf)) < 0) return 0;
  p = strstr(buf, "SigBlk:\t");
  if (!p) return 0;
  p += 8;
  /* 16 hex digits, most significant first: bit N is digit 15 - N / 4 */
  digit = p[15 - bit / 4];
  digit = digit >= 'a' ? digit - 'a' + 10 : digit - '0';
  return (digit >> (bit % 4)) & 1;
}

/* The stack pointer of a thread blocked in a system call (from /proc/self/task/TID/syscall), or 0. */
static uintptr_t lk_task_sp(pid_t tid)
{
  char buf[512], *p, *last = NULL, *prev = NULL;
  uintptr_t v = 0;
  if (lk_task_file(tid, "syscall", buf, sizeof(buf)) <= 0 || buf[0] < '0' || buf[0] > '9') return 0;
  for (p = buf; *p; p++)
    if (*p == ' ') { prev = last; last = p + 1; }
  if (!prev) return 0;  /* "... SP PC": the stack pointer is the next-to-last field */
  for (p = prev; *p && *p != ' '; p++) {
    char c = *p;
    if (c == 'x' || c == 'X') { v = 0; continue; }
    v = v * 16 + (uintptr_t)(c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0');
  }
  return v;
}

void lk_threads_park(void)
{
  struct sigaction sa;
  pid_t me = lk_gettid(), pid = getpid();
  struct timespec ts = { 0, 1000000 };
  int i, waiting, rounds, last = -1, still = 0;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = lk_park_handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigfillset(&sa.sa_mask);
  {
    struct sigaction cur;
    sigaction(LK_PARK_SIG, NULL, &cur);
    if (cur.sa_sigaction != lk_park_handler) lk_park_old = cur;  /* keep the program's */
  }
  sigaction(LK_PARK_SIG, &sa, NULL);
  __atomic_store_n(&lk_release, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&lk_parking, 1, __ATOMIC_RELEASE);
  for (i = 0; i < lk_nthreads; i++) {
    lk_thread *t = &lk_threads[i];
    t->unstopped = 0;
    if (!t->used || t->tid == me) continue;
    if (syscall(SYS_tgkill, pid, t->tid, LK_PARK_SIG) != 0) { t->used = 0; continue; }  /* gone */
    if (lk_task_blocks_park(t->tid)) t->unstopped = 1;
  }
  /* Wait while threads keep arriving: up to 10 s in all, 2 s without progress. Threads being
  ** started (they park at the gate once listed) only 5 ms without progress once every listed
  ** thread is parked: their creator may have been parked before it made them. */
  for (rounds = 0; rounds < 10000; rounds++) {
    int listed = 0, starting = __atomic_load_n(&lk_starting, __ATOMIC_ACQUIRE);
    for (i = 0; i < lk_nthreads; i++) {
      lk_thread *t = &lk_threads[i];
      if (t->used && t->tid != me && !t->unstopped && !__atomic_load_n(&t->parked, __ATOMIC_ACQUIRE)) listed++;
    }
    waiting = listed + (starting > 0 ? starting : 0);
    if (!waiting) break;
    if (waiting == last) { if (++still > (listed ? 2000 : 5)) break; }
    else still = 0;
    last = waiting;
    nanosleep(&ts, NULL);
  }
  /* Threads that block the signal: give them a moment to reach the allocator's gate. */
  for (rounds = 0; rounds < 200; rounds++) {
    waiting = 0;
    for (i = 0; i < lk_nthreads; i++) {
      lk_thread *t = &lk_threads[i];
      if (t->used && t->tid != me && !__atomic_load_n(&t->parked, __ATOMIC_ACQUIRE)) waiting++;
    }
    if (!waiting) break;
    nanosleep(&ts, NULL);
  }
  for (i = 0; i < lk_nthreads; i++) {
    lk_thread *t = &lk_threads[i];
    t->unstopped = t->used && t->tid != me && !__atomic_load_n(&t->parked, __ATOMIC_ACQUIRE);
  }
}

/* How many threads did not stop at the last park; their ids go into tids (up to cap). */
int lk_threads_unstopped_list(pid_t *tids, int cap)
{
  int i, n = 0;
  for (i = 0; i < lk_nthreads; i++) {
    if (!lk_threads[i].used || !lk_threads[i].unstopped) continue;
    if (n < cap) tids[n] = lk_threads[i].tid;
    n++;
  }
  return n;
}

int lk_threads_unstopped(void) { return lk_threads_unstopped_list(NULL, 0); }

/* Calls fn on the live part of every other thread's stack (*tid set to the thread's id first). A
** thread that did not park is scanned from the stack pointer of the system call it is blocked in,
** or else whole: conservative (stale values below its stack pointer may keep blocks). */
void lk_threads_foreach_stack(lk_range_fn fn, void *ud, long *tid)
{
  pid_t me = lk_gettid();
  int i;
  lk_thread_main_bounds();
  for (i = 0; i < lk_nthreads; i++) {
    lk_thread *t = &lk_threads[i];
    uintptr_t lo, sp;
    if (!t->used || t->tid == me || !t->hi) continue;
    sp = t->parked ? t->sp : lk_task_sp(t->tid);
    lo = sp > t->lo && sp < t->hi ? sp - 128 /* the red zone */ : t->lo;
    if (lo < t->lo) lo = t->lo;
    *tid = t->tid;
    fn(lo, t->hi, ud);
  }
}

int lk_thread_self_stack(uintptr_t *hi)
{
  lk_thread_main_bounds();
  if (!lk_thread_me || !lk_thread_me->hi) return 0;
  *hi = lk_thread_me->hi;
  return 1;
}

/* -- Setup -------------------------------------------------------------- */

extern void *__libc_stack_end;

void lk_thread_init(void)
{
  struct rlimit rl;
  size_t max = (size_t)1 << 30;
  lk_lock_register(&lk_threads_lock);
  lk_real_pthread_create = (lk_pthread_create_f)dlsym(RTLD_NEXT, "pthread_create");
  lk_thread_main = lk_thread_me = lk_thread_add(getpid(), 0, 0);  /* bounds: lk_thread_main_bounds */
  /* For lk_unwind.c: main's frames lie below where they began, within its rlimit. */
  if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < max) max = rl.rlim_cur;
  lk_self.stack_hi = (uintptr_t)__libc_stack_end;
  lk_self.stack_lo = lk_self.stack_hi - max;
}

/* Only the forking thread lives on in the child. The other threads' stacks are dead memory there:
** not roots (as in Valgrind), so what only they held is lost in the child. */
void lk_thread_after_fork(void)
{
  int i;
  for (i = 0; i < lk_nthreads; i++) {
    lk_thread *t = &lk_threads[i];
    if (t != lk_thread_me) t->used = 0;
  }
  lk_starting = 0;                 /* threads the parent was starting are not the child's */
  if (lk_thread_main != lk_thread_me) lk_thread_main = NULL;  /* another thread forked: [stack] is dead */
  if (lk_thread_me) lk_thread_me->tid = lk_gettid();
}
