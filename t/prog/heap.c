/* heap.c: N allocations of SIZE bytes (one of them a realloc of a block first SIZE/2 bytes long),
** the first K of them freed, the others kept through a global (reachable). The heap summary's
** totals (t/text_spec.lua) of `heap N K SIZE` less those of `heap 0 0 0` are known exactly. */
#include <stdlib.h>

static void *volatile kept[4096];

int main(int argc, char **argv)
{
  int n = argc > 1 ? atoi(argv[1]) : 0, k = argc > 2 ? atoi(argv[2]) : 0, i;
  size_t size = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
  if (n > 4096) n = 4096;
  for (i = 0; i < n; i++) kept[i] = malloc(i == 0 ? size / 2 : size);
  if (n > 0) kept[0] = realloc(kept[0], size);
  for (i = 0; i < k && i < n; i++) {
    free(kept[i]);
    kept[i] = NULL;
  }
  return 0;
}
