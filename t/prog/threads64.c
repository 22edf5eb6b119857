/* 64 threads each make 200,000 allocations of 16 to 512 bytes and free all but every 1000th
** (dropped in leak_every_1000th): exactly 64 x 200 lost blocks, whatever the interleaving. Prints
** how many bytes were lost in all. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile uint64_t lost_bytes;

#define THREADS 64
#define OPS 200000

__attribute__((noinline)) static void leak_every_1000th(size_t n)
{
  void *volatile p = malloc(n);
  p = NULL;
}

static void *work(void *arg)
{
  unsigned seed = (unsigned)(uintptr_t)arg;
  void *ring[16] = { 0 };
  int i;
  for (i = 0; i < OPS; i++) {
    size_t n = 16 + rand_r(&seed) % 497;
    if (i % 1000 == 999) {
      leak_every_1000th(n);
      __atomic_fetch_add(&lost_bytes, n, __ATOMIC_RELAXED);
      continue;
    }
    free(ring[i % 16]);
    ring[i % 16] = malloc(n);
  }
  for (i = 0; i < 16; i++) free(ring[i]);
  return NULL;
}

int main(void)
{
  pthread_t t[THREADS];
  int i;
  for (i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(i + 1));
  for (i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  {
    /* not printf: its buffer, malloc'd now from memory the threads used, would hold stale
    ** pointers to lost blocks in the bytes it never writes (no definedness tracking here) */
    char out[32];
    int len = snprintf(out, sizeof(out), "%llu\n", (unsigned long long)lost_bytes);
    if (write(1, out, (size_t)len) != len) return 1;
  }
  return 0;
}
