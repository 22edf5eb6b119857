/* Stacks the tracker's own unwinder leaves to libunwind: a block lost in a signal handler that runs
** on an alternate stack (sigaltstack: not a stack the tracker knows), and one lost below a frame
** that realigns the stack and reads arguments passed on it (GCC describes its CFA with a DWARF
** expression). Prints whether libunwind was mapped at the start, after the first and after the
** second ("libunwind: 0 1 1" under the tracker: loaded only when a stack needs it; argv[1] says
** which comes first). Loses 40 bytes
** in lost_on_altstack, called by on_signal, and 24 bytes in lost_below_realign, called by
** realigned; a block of 48 bytes in an ordinary frame is lost first (lost_plainly). With "here",
** after lost_plainly only a handler on the main stack loses a block, a stack the tracker's own
** unwinder steps through the signal frame (on_own_stack). */
#include <alloca.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mapped(void)
{
  char line[512];
  int found = 0;
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strstr(line, "libunwind")) found = 1;
  fclose(f);
  return found;
}

static void *volatile sink;

static __attribute__((noinline)) void lost_plainly(void) { sink = malloc(48); sink = NULL; }
static __attribute__((noinline)) void lost_on_altstack(void) { sink = malloc(40); sink = NULL; }
static __attribute__((noinline)) void lost_below_realign(void) { sink = malloc(24); sink = NULL; }

static void on_signal(int sig)
{
  (void)sig;
  lost_on_altstack();
  __asm__ volatile("" ::: "memory");  /* not a tail call */
}

static __attribute__((noinline)) int realigned(int n, int a2, int a3, int a4, int a5, int a6, int a7, int a8)
{
  volatile char buf[32] __attribute__((aligned(32)));
  volatile char *p = alloca((size_t)n);
  buf[0] = (char)(a2 + a3 + a4 + a5 + a6 + a7 + a8);
  p[0] = 1;
  lost_below_realign();
  return buf[0] + p[0];
}

static void on_altstack(void)
{
  static stack_t ss;
  struct sigaction sa;
  ss.ss_sp = malloc(1 << 16);
  ss.ss_size = 1 << 16;
  ss.ss_flags = 0;
  sigaltstack(&ss, NULL);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_ONSTACK;
  sigaction(SIGUSR1, &sa, NULL);
  raise(SIGUSR1);
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, NULL);
  free(ss.ss_sp);
}

/* A handler on the thread's own stack, which the tracker's unwinder steps through (the signal
** frame's ucontext): 16 bytes lost in lost_in_handler, called by on_signal_here. */
static __attribute__((noinline)) void lost_in_handler(void) { sink = malloc(16); sink = NULL; }

static void on_signal_here(int sig)
{
  (void)sig;
  lost_in_handler();
  __asm__ volatile("" ::: "memory");
}

static __attribute__((noinline)) void on_own_stack(void)
{
  signal(SIGUSR2, on_signal_here);
  raise(SIGUSR2);
  __asm__ volatile("" ::: "memory");
}

/* argv[1]: "signal" (the alternate stack first), "realign" (the realigned frame first), or
** "here" (then only a handler on the thread's own stack: prints "libunwind: 0 0 0"). */
int main(int argc, char **argv)
{
  int before, after_first;
  int signal_first = argc > 1 && strcmp(argv[1], "signal") == 0;
  lost_plainly();
  if (argc > 1 && strcmp(argv[1], "here") == 0) {
    before = mapped();
    on_own_stack();
    printf("libunwind: %d %d %d\n", before, mapped(), mapped());
    return 0;
  }
  before = mapped();
  if (signal_first) on_altstack(); else realigned(64, 1, 2, 3, 4, 5, 6, 7);
  after_first = mapped();
  if (signal_first) realigned(64, 1, 2, 3, 4, 5, 6, 7); else on_altstack();
  printf("libunwind: %d %d %d\n", before, after_first, mapped());
  return 0;
}
