/* A C program whose every leaked block has its own call stack, for the report step at scale:
** `stacks N [PAD]` leaks N blocks, block i of 8 * (1 + i % 128) bytes, each from a distinct stack. */
#include <stdlib.h>

/* Keep the compiler from proving blocks dead. */
static void *volatile sink;

/* -- Distinct stacks ------------------------------------------------------- */

/* One call site per decimal digit of I (ten sites, ten return addresses), DIGITS levels deep:
** no two values of I below 10^DIGITS share a stack. */
static void __attribute__((noinline)) step(int digits, unsigned long i, size_t size)
{
  if (digits == 0) {
    sink = malloc(size);
    sink = NULL;
    return;
  }
  switch (i % 10) {
  case 0: step(digits - 1, i / 10, size); break;
  case 1: step(digits - 1, i / 10, size); break;
  case 2: step(digits - 1, i / 10, size); break;
  case 3: step(digits - 1, i / 10, size); break;
  case 4: step(digits - 1, i / 10, size); break;
  case 5: step(digits - 1, i / 10, size); break;
  case 6: step(digits - 1, i / 10, size); break;
  case 7: step(digits - 1, i / 10, size); break;
  case 8: step(digits - 1, i / 10, size); break;
  default: step(digits - 1, i / 10, size); break;
  }
}

/* PAD more frames outside the distinct ones: deeper stacks (LJLEAK_DEPTH=64) of the same records. */
static void __attribute__((noinline)) pad(int n, int digits, unsigned long i)
{
  if (n > 0)
    pad(n - 1, digits, i);
  else
    step(digits, i, 8 * (1 + i % 128));
}

/* -- Main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
  unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
  int padding = argc > 2 ? atoi(argv[2]) : 0;
  int digits = 1;
  for (unsigned long m = 10; m < n; m *= 10) digits++;
  for (unsigned long i = 0; i < n; i++) pad(padding, digits, i);
  return 0;
}
