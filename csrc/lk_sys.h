/* ljleak tracker: the tracker's own resources. Memory it never tracks, arenas that grow on demand,
** its own stack, reads that cannot fault, and its own file descriptors. */
#ifndef LK_SYS_H
#define LK_SYS_H

#include "lk_def.h"

void *lk_sysmap(size_t len);          /* zeroed, never-tracked, MAP_NORESERVE; NULL if refused */
void lk_sysunmap(void *p, size_t len);
extern volatile uint64_t lk_nomem;    /* allocations not recorded for want of memory */
/* Which of the n pages from lo (page-aligned) hold data: vec[k] 1 if in memory or in swap; 0 if
** that cannot be told (then read them all). */
int lk_pages_in_use(uintptr_t lo, size_t n, unsigned char *vec);

/* -- Growing arenas: pieces with stable ids (offset / 8), chunks mapped on demand -- */
#define LK_CHUNK_BITS 20
#define LK_CHUNK_SIZE ((size_t)1 << LK_CHUNK_BITS)
#define LK_ARENA_CHUNKS 2048          /* ids stay below 2^28 */
typedef struct lk_arena {
  char *chunk[LK_ARENA_CHUNKS];       /* mapped on demand */
  size_t used, max;                   /* bytes handed out (virtual offset); cap (0: none) */
  uint64_t full;                      /* requests refused */
} lk_arena;
void *lk_arena_alloc(lk_arena *a, size_t n, uint32_t *id);  /* caller holds its lock */
static inline void *lk_arena_at(const lk_arena *a, uint32_t id)
{
  size_t off = (size_t)id << 3;
  char *c = off >> LK_CHUNK_BITS < LK_ARENA_CHUNKS
    ? __atomic_load_n(&((lk_arena *)a)->chunk[off >> LK_CHUNK_BITS], __ATOMIC_ACQUIRE) : NULL;
  return c ? c + (off & (LK_CHUNK_SIZE - 1)) : NULL;
}

int lk_own_stack_init(void);
int lk_on_own_stack(void (*fn)(void *), void *arg);  /* 0 if the stack could not be had */
size_t lk_safe_copy(void *dst, uintptr_t src, size_t n);  /* bytes copied before a hole */
int lk_safe_copy_available(void);
int lk_fd_move_high(int fd);             /* dup above the program's range, close-on-exec */

#endif
