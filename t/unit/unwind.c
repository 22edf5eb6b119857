/* Unit test of the tracker's own unwinder (csrc/lk_unwind.c) against glibc's backtrace() (libgcc's
** unwinder, the reference): plain nested calls, a frame whose CFA is RBP (alloca), a big frame, a
** signal handler's frames down through the signal frame, a frame realigned by a DWARF expression
** (which it leaves to libunwind: "hard", with the frames before it), a thread's stack, and bounds
** it refuses (no stack known). TAP output; UNWIND_DEBUG=1 prints both traces of each comparison. */
#define _GNU_SOURCE
#include <alloca.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../../csrc/lk_state.h"
#include "../../csrc/lk_unwind.h"
#include "tap.h"

#define MAXF 64
extern void *__libc_stack_end;

typedef struct { uintptr_t own[MAXF]; void *ref[MAXF]; int nown, nref, hard; } trace;

/* Both traces from the same caller frame: the unwinder's frames from the one of the caller of
** take(), backtrace()'s from there too (each starts inside its own machinery). */
static __attribute__((noinline)) void take(trace *t)
{
  void *ra = __builtin_return_address(0);
  int i, j;
  t->nown = lk_unw_trace(t->own, MAXF, &t->hard);
  t->nref = backtrace(t->ref, MAXF);
  for (i = 0; i < t->nown && t->own[i] != (uintptr_t)ra; i++) ;
  memmove(t->own, t->own + i, (size_t)(t->nown - i) * sizeof(uintptr_t));
  t->nown -= i;
  for (j = 0; j < t->nref && t->ref[j] != ra; j++) ;
  memmove(t->ref, t->ref + j, (size_t)(t->nref - j) * sizeof(void *));
  t->nref -= j;
}

/* The unwinder's frames are backtrace()'s, all of them (or the first N when it stopped early). */
static int same(const trace *t, int n)
{
  int i;
  if (getenv("UNWIND_DEBUG")) {
    fprintf(stderr, "own %d hard %d:", t->nown, t->hard);
    for (i = 0; i < t->nown; i++) fprintf(stderr, " %lx", (unsigned long)t->own[i]);
    fprintf(stderr, "\nref %d:", t->nref);
    for (i = 0; i < t->nref; i++) fprintf(stderr, " %lx", (unsigned long)t->ref[i]);
    fprintf(stderr, "\n");
  }
  if (n < 0) n = t->nref;
  if (t->nown < n || n < 2) return 0;
  for (i = 0; i < n; i++)
    if (t->own[i] != (uintptr_t)t->ref[i]) return 0;
  return 1;
}

static trace tr;

static __attribute__((noinline)) int nested(int n)
{
  int r;
  if (!n) { take(&tr); return 1; }
  r = nested(n - 1);
  __asm__ volatile("" ::: "memory");  /* not a tail call */
  return r + 1;
}

static __attribute__((noinline)) int with_alloca(int n)
{
  volatile char *p = alloca((size_t)n);  /* RSP moves at run time: the CFA is RBP's */
  p[0] = 1;
  nested(2);
  return p[0];
}

static __attribute__((noinline)) int big_frame(void)
{
  volatile char buf[100000];
  buf[0] = 1;
  nested(1);
  return buf[0];
}

static void on_signal(int sig)
{
  (void)sig;
  nested(1);
}

static __attribute__((noinline)) void raise_here(void)
{
  raise(SIGUSR1);
  __asm__ volatile("" ::: "memory");
}

/* A frame realigned to 64 bytes: its CFA is RBP's. */
static __attribute__((noinline)) int realigned(void)
{
  volatile char buf[64] __attribute__((aligned(64)));
  buf[0] = 1;
  nested(1);
  return buf[0];
}

/* A frame that realigns the stack and reads arguments passed on it: GCC keeps the incoming stack
** pointer in a register (DRAP) and describes the CFA with a DWARF expression. */
static __attribute__((noinline)) int realigned_entry(int n, int a2, int a3, int a4, int a5, int a6,
                                                     int a7, int a8)
{
  volatile char buf[32] __attribute__((aligned(32)));
  volatile char *p = alloca((size_t)n);
  buf[0] = (char)(a2 + a3 + a4 + a5 + a6 + a7 + a8);
  p[0] = 1;
  nested(1);
  return buf[0] + p[0];
}

static void *thread_main(void *arg)
{
  (void)arg;
  nested(3);
  return NULL;
}

static void *thread_told(void *arg)
{
  pthread_attr_t a;
  void *stk;
  size_t sz;
  (void)arg;
  pthread_getattr_np(pthread_self(), &a);
  pthread_attr_getstack(&a, &stk, &sz);
  pthread_attr_destroy(&a);
  lk_self.stack_lo = (uintptr_t)stk;
  lk_self.stack_hi = (uintptr_t)stk + sz;
  nested(3);
  return NULL;
}

int main(void)
{
  struct rlimit rl;
  pthread_t th;
  pthread_attr_t a;

  lk_unw_init();
  getrlimit(RLIMIT_STACK, &rl);
  lk_self.stack_hi = (uintptr_t)__libc_stack_end;
  lk_self.stack_lo = lk_self.stack_hi - (rl.rlim_cur == RLIM_INFINITY ? (size_t)1 << 30 : rl.rlim_cur);

  nested(5);
  ok(!tr.hard && same(&tr, -1), "nested calls: every frame backtrace() finds, down to _start");
  ok(tr.nown >= 8, "nested calls: the six nested frames, main and below");
  nested(5);
  ok(!tr.hard && same(&tr, -1), "the same again, from the rule cache");

  with_alloca(4096 + 8);
  ok(!tr.hard && same(&tr, -1), "a frame whose CFA is RBP plus an offset (alloca)");
  big_frame();
  ok(!tr.hard && same(&tr, -1), "a 100 KB frame");

  signal(SIGUSR1, on_signal);
  memset(&tr, 0, sizeof(tr));
  raise_here();
  ok(!tr.hard && same(&tr, -1), "a signal handler's frames, the signal frame, and the interrupted ones");

  realigned();
  ok(!tr.hard && same(&tr, -1), "a frame realigned to 64 bytes (RBP's CFA)");
  memset(&tr, 0, sizeof(tr));
  realigned_entry(64, 1, 2, 3, 4, 5, 6, 7);
  ok(tr.hard && tr.nown >= 2 && tr.nown < tr.nref && same(&tr, tr.nown),
     "a frame realigned by a DWARF expression: hard, with the frames up to it, itself last");

  pthread_attr_init(&a);
  pthread_create(&th, &a, thread_main, NULL);
  pthread_join(th, NULL);
  ok(tr.hard && tr.nown == 0, "a thread whose stack it was not told: hard, no frames");

  pthread_create(&th, &a, thread_told, NULL);
  pthread_join(th, NULL);
  ok(!tr.hard && same(&tr, -1), "a thread told its stack (as lk_thread.c does): every frame");
  return done();
}
