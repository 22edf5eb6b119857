/* exit() where little stack is left: from a thread with a 16 KiB stack ("thread"), or at the
** bottom of a deep recursion on main's stack ("recurse"). Each leaks one block of 101 bytes in
** leak_here first; the check must run and find it. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

__attribute__((noinline)) static void leak_here(void)
{
  static void *volatile sink;
  sink = malloc(101);
  sink = NULL;
}

static void *small_thread(void *arg)
{
  (void)arg;
  leak_here();
  exit(0);
}

static size_t depth_left;
__attribute__((noinline)) static int recurse(int n)
{
  volatile char pad[1024];
  memset((char *)pad, n, sizeof(pad));
  if ((size_t)n >= depth_left) {
    leak_here();
    exit(0);
  }
  return recurse(n + 1) + pad[0];
}

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "recurse") == 0) {
    struct rlimit rl;
    getrlimit(RLIMIT_STACK, &rl);
    /* leave about 48 KiB of the main stack */
    depth_left = (rl.rlim_cur == RLIM_INFINITY ? 8u << 20 : rl.rlim_cur) / 1100 - 48;
    return recurse(0);
  } else {
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 16384);
    pthread_create(&t, &a, small_thread, NULL);
    pthread_join(t, NULL);
  }
  return 1;
}
