/* ljleak tracker: the tracker's own unwinder (x86-64): call frame information from the loaded
** objects' .eh_frame_hdr and .eh_frame, one rule a return address, cached. It steps the frames
** whose rule is a register plus an offset (nearly all: compiled code, LuaJIT's VM, signal
** frames); for the rest lk_stack.c asks libunwind, loaded only then. */
#ifndef LK_UNWIND_H
#define LK_UNWIND_H

#include "lk_def.h"

/* The return addresses of the calling thread's stack, innermost first (the first ones inside the
** tracker), at most MAX; their number. They end at the stack's end, at code without frame
** information (JIT code), at MAX, or where a frame needs more than this unwinder does: then
** *HARD is 1 (ask libunwind), and the frames are those before it. */
int lk_unw_trace(uintptr_t *out, int max, int *hard);
void lk_unw_init(void);

#endif
