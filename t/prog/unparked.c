/* Workers that block every signal and keep allocating and freeing blocks above the mmap
** threshold while main returns: the check must neither crash nor call their blocks lost.
** With "compute", they never call the allocator again (they cannot be stopped at all) and each
** keeps one block in a local. main leaks exactly one block of 99 bytes (leak_in_main). */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *worker(void *arg)
{
  sigset_t all;
  unsigned seed = (unsigned)(uintptr_t)arg;
  char *held[8] = { 0 };     /* live blocks, kept on this thread's stack */
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    unsigned k = rand_r(&seed) % 8;
    free(held[k]);
    held[k] = malloc(256 * 1024 + (size_t)(rand_r(&seed) % 4096));
    memset(held[k], 1, 4096);
  }
  return NULL;
}

static void *computer(void *arg)
{
  sigset_t all;
  volatile uintptr_t mine = (uintptr_t)malloc(4000);
  volatile unsigned long n = (uintptr_t)arg;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) n = n * 6364136223846793005ul + mine;
  return NULL;
}

__attribute__((noinline)) static void leak_in_main(void)
{
  static void *volatile sink;
  sink = malloc(99);
  sink = NULL;
}

int main(int argc, char **argv)
{
  pthread_t t[4];
  int i, compute = argc > 1 && strcmp(argv[1], "compute") == 0;
  for (i = 0; i < 4; i++) pthread_create(&t[i], NULL, compute ? computer : worker, (void *)(uintptr_t)(i + 1));
  usleep(50000);
  leak_in_main();
  return 0;
}
