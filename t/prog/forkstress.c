/* Threads allocate (at ever new addresses), free and start threads all the time while main forks
** 100 times (or argv[1]); each child does the same once, leaks one block of 13 bytes (child_leak)
** and exits with _exit; main leaks one of 77 (parent_leak). A block a churning thread held at the
** fork is lost in the child, as in Valgrind: that thread does not exist there. Before the tracker
** took its locks around fork, a child could inherit a lock another thread held, and hang. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *arg)
{
  unsigned seed = (unsigned)(uintptr_t)arg;
  while (!stop) {
    /* above the mmap threshold: new addresses all the time, so the tracker keeps adding to its
    ** table's index (under a lock) */
    void *p = malloc((size_t)(rand_r(&seed) % (1u << 20)) + (256u << 10));
    __asm__ volatile("" : : "r"(p) : "memory");  /* keep the pair: p is used */
    free(p);
  }
  return NULL;
}

static void *nothing(void *arg) { return arg; }

static void *spawner(void *arg)
{
  (void)arg;
  while (!stop) {
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0) pthread_join(t, NULL);
  }
  return NULL;
}

__attribute__((noinline)) static void child_leak(void)
{
  static void *volatile sink;
  pthread_t t;
  if (pthread_create(&t, NULL, nothing, NULL) == 0) pthread_join(t, NULL);
  free(malloc(8u << 20));
  sink = malloc(13);
  sink = NULL;
}

__attribute__((noinline)) static void parent_leak(void)
{
  static void *volatile sink;
  sink = malloc(77);
  sink = NULL;
}

int main(int argc, char **argv)
{
  pthread_t t[3];
  int i, nforks = argc > 1 ? atoi(argv[1]) : 100;
  for (i = 0; i < 2; i++) pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
  pthread_create(&t[2], NULL, spawner, NULL);
  for (i = 0; i < nforks; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      child_leak();
      _exit(0);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
  }
  stop = 1;
  for (i = 0; i < 3; i++) pthread_join(t[i], NULL);
  parent_leak();
  return 0;
}
