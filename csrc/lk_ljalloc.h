/* ljleak: walking LuaJIT's own allocator (lj_alloc.c, a dlmalloc) from its malloc_state, for
** the tracker (scan only chunks in use) and for Valgrind runs (hide free chunks from its scan). */
#ifndef LK_LJALLOC_H
#define LK_LJALLOC_H

#include <stddef.h>
#include <stdint.h>

#define LK_MS_TOP 32          /* malloc_state.top */
#define LK_MS_SEG 840         /* malloc_state.seg: { base, size, next } */
#define LK_CINUSE 2
#define LK_INUSE_BITS 3
#define LK_FENCEPOST (LK_INUSE_BITS | 8)

#define LK_MS_PTR(p, off) (*(char *volatile *)((char *)(p) + (off)))
#define LK_MS_SIZE(p, off) (*(volatile size_t *)((char *)(p) + (off)))

/* fn(lo, hi, inuse, ud) for the payload of every chunk of every segment: chunks in use (the
** last word of a chunk in use is the next chunk's prev_foot), and free ones (the top chunk of
** the segment that holds it included). A chunk whose size makes no sense ends its segment. */
typedef void (*lk_ljalloc_fn)(uintptr_t lo, uintptr_t hi, int inuse, void *ud);

static inline void lk_ljalloc_walk(char *ms, lk_ljalloc_fn fn, void *ud)
{
  char *seg, *top = LK_MS_PTR(ms, LK_MS_TOP);
  int nseg = 0;
  for (seg = ms + LK_MS_SEG; seg && nseg < 100000; seg = LK_MS_PTR(seg, 16), nseg++) {
    char *base = LK_MS_PTR(seg, 0), *end, *q;
    size_t size = LK_MS_SIZE(seg, 8);
    if (!base || !size) break;
    end = base + size;
    for (q = base; q + 16 <= end; ) {
      size_t head = LK_MS_SIZE(q, 8), csz = head & ~(size_t)LK_INUSE_BITS;
      if (q == top) {  /* the rest of the segment is free */
        fn((uintptr_t)q + 16, (uintptr_t)q + (csz && q + csz <= end ? csz : 16), 0, ud);
        break;
      }
      if (head == LK_FENCEPOST || csz < 16 || q + csz > end) break;
      if (head & LK_CINUSE) {
        uintptr_t hi = (uintptr_t)q + csz + 8;
        fn((uintptr_t)q + 16, hi > (uintptr_t)end ? (uintptr_t)end : hi, 1, ud);
      } else {
        fn((uintptr_t)q + 16, (uintptr_t)q + csz, 0, ud);
      }
      q += csz;
    }
  }
}

/* Does ms look like an lj_alloc malloc_state whose first segment holds its top chunk? */
static inline int lk_ljalloc_valid(char *ms)
{
  char *top = LK_MS_PTR(ms, LK_MS_TOP), *base = LK_MS_PTR(ms, LK_MS_SEG);
  size_t size = LK_MS_SIZE(ms, LK_MS_SEG + 8);
  return top && base && size && top >= base && top < base + size;
}

#endif
