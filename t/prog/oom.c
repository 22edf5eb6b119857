/* Allocates 1 MiB blocks until malloc fails (run it under ulimit -v), frees them, leaks one block
** of 55 bytes (leak_55) and prints how many MiB it got. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) static void leak_55(void)
{
  static void *volatile sink;
  sink = malloc(55);
  sink = NULL;
}

int main(void)
{
  static void *blocks[1 << 20];
  size_t n = 0, i;
  while (n < sizeof(blocks) / sizeof(blocks[0]) && (blocks[n] = malloc(1 << 20)) != NULL) n++;
  for (i = 0; i < n; i++) free(blocks[i]);
  leak_55();
  printf("%zu\n", n);
  return 0;
}
