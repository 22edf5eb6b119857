/* A server-like program: leaks one block of 123 bytes (leak_123), creates the file argv[1] to say
** it runs, and ends cleanly (returning from main) on SIGTERM or SIGQUIT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
  (void)sig;
  stop = 1;
}

__attribute__((noinline)) static void leak_123(void)
{
  static void *volatile sink;
  sink = malloc(123);
  sink = NULL;
}

int main(int argc, char **argv)
{
  FILE *f;
  signal(SIGTERM, on_signal);
  signal(SIGQUIT, on_signal);
  leak_123();
  if (argc > 1 && (f = fopen(argv[1], "w"))) fclose(f);
  while (!stop) usleep(10000);
  return 0;
}
