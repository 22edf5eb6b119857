/* ljleak tracker: the root scan that classifies every live block, with Valgrind's meanings
** (definite, indirect, possible, reachable). */
#ifndef LK_SCAN_H
#define LK_SCAN_H

#include "lk_table.h"

typedef struct lk_result {
  lk_block *blocks;
  size_t n, cap;
  size_t roots_bytes;
  uint64_t scan_us;          /* time the scan took (collection and classification), microseconds */
  uint32_t *work;
  uint32_t *owner;       /* per block (in work's memory): an indirect block's definite owner */
  size_t nomem;          /* live blocks that could not be classified for want of memory */
  int unsafe;            /* a thread ran on and its memory was read directly */
} lk_result;
/* The checking thread: its stack is scanned from sp up, and regs (if any) are roots. C_ONLY: the
** program's own mappings (LuaJIT's heap) are no roots: what stays reachable is held from C's
** (data, stacks, registers, TLS), whatever Lua's collector does. */
typedef struct lk_scan_from {
  uintptr_t sp;
  const uintptr_t *regs;
  long tid;
  int c_only;
} lk_scan_from;

void lk_scan_init(void);
void lk_scan(lk_result *r, const lk_scan_from *from);  /* the world must be stopped */
void lk_result_free(lk_result *r);

#endif
