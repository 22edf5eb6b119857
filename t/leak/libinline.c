/* libinline.c: a leak made in functions the compiler inlines (always_inline works at -O0 too),
** for the inline-frame tests (t/leak/inlined.lua): malloc is called from inline_make, which
** inline_middle inlines, which leak_inlined inlines: one call instruction, three functions. */
#include <stdlib.h>

/* Keep the compiler from proving the block dead. */
static void *volatile sink;

static inline __attribute__((always_inline)) void *inline_make(size_t n)
{
  return malloc(n);
}

static inline __attribute__((always_inline)) void *inline_middle(size_t n)
{
  void *p = inline_make(n);
  return p;
}

void leak_inlined(size_t n)
{
  sink = inline_middle(n);
  sink = NULL;
}
