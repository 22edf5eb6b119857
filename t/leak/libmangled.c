/* libmangled.c: a leaky function with a C++ linkage name, _ZN5thing4makeEm (thing::make(unsigned
** long)), built by the C compiler, for the demangling tests (t/leak/mangled.lua). */

#include <stdlib.h>

void *thing_make(size_t n) __asm__("_ZN5thing4makeEm");

/* Returns a block of N bytes that the caller drops. */
void *thing_make(size_t n)
{
  return malloc(n);
}
