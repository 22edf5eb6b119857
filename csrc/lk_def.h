/* ljleak tracker: types, macros and constants shared by every part of the preloaded library.
** Each part declares its own functions in its own header (lk_PART.h); this one declares none. */
#ifndef LK_DEF_H
#define LK_DEF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LK_EXPORT __attribute__((visibility("default")))
#define LK_HIDDEN __attribute__((visibility("hidden")))
#define LK_USED __attribute__((used))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define LK_TLS __thread __attribute__((tls_model("initial-exec")))

/* -- Constants shared with Lua --------------------------------------------------------------
** lua/ljleak/const.lua declares the same; t/const_spec.lua checks that the two agree. */

/* Allocation functions, as a site records them (the raw report's names). */
#define LK_ALLOC_FNS(_) \
  _(MALLOC, "malloc") _(CALLOC, "calloc") _(REALLOC, "realloc") _(REALLOCARRAY, "reallocarray") \
  _(MEMALIGN, "memalign") _(POSIX_MEMALIGN, "posix_memalign") _(ALIGNED_ALLOC, "aligned_alloc") \
  _(VALLOC, "valloc") _(PVALLOC, "pvalloc")

/* Leak kinds, ordered so that a larger value is "more reachable" but DEFINITE (set last); UNREACHED:
** not classified yet; GONE: freed while a thread that could not be stopped ran on (not a leak). */
#define LK_KINDS(_) \
  _(UNREACHED, "unreached") _(INDIRECT, "indirect") _(POSSIBLE, "possible") _(REACHABLE, "reachable") \
  _(DEFINITE, "definite") _(GONE, "gone")

/* Environment variables the tracker reads. */
#define LK_ENV_DIR "LJLEAK_DIR"
#define LK_ENV_DEPTH "LJLEAK_DEPTH"
#define LK_ENV_LUA "LJLEAK_LUA"
#define LK_ENV_MAX_SITES "LJLEAK_MAX_SITES"
#define LK_ENV_KEEP_MODULES "LJLEAK_KEEP_MODULES"
#define LK_ENV_EXPLAIN "LJLEAK_EXPLAIN"
#define LK_ENV_VG_ID "LJLEAK_VG_ID"      /* libljleak_vg.so: names the process's XML file */
#define LK_ENV_LUA_BOOT "LJLEAK_LUA_BOOT" /* Lua code for the Lua states a program opens itself */
#define LK_ENV_UNWIND "LJLEAK_UNWIND"    /* "libunwind": every stack from libunwind (lk_stack.c) */
#define LK_ENV_LUA_WALK "LJLEAK_LUA_WALK"  /* "getstack": Lua frames through lua_getstack (lk_luaread.c) */

#define LK_DEPTH_DEFAULT 16      /* C frames kept per stack (LJLEAK_DEPTH) */
#define LK_MAXDEPTH 64           /* ... at most */
#define LK_LUA_DEPTH_DEFAULT 6   /* Lua frames kept (LJLEAK_LUA_DEPTH, given by the Lua side) */
#define LK_LUA_DEPTH_MAX 16      /* ... at most */

#define LK_ENUM(name, text) LK_F_##name,
enum { LK_ALLOC_FNS(LK_ENUM) LK_F__MAX };
#undef LK_ENUM
#define LK_ENUM(name, text) LK_##name,
enum { LK_KINDS(LK_ENUM) LK_KIND__MAX };
#undef LK_ENUM

/* Site ids: 0 "stack not recorded" (the site table was full), 1 ljleak's own work in the program
** (never reported); real sites from 2 on. */
#define LK_SITE_INTERNAL 1

typedef void (*lk_range_fn)(uintptr_t lo, uintptr_t hi, void *ud);

/* -- Entry points that capture their caller -------------------------------------------------- */

/* A caller's callee-saved registers (rbx rbp r12 r13 r14 r15) and stack pointer (its frame, just
** above the return address), as it had them when it called into the tracker. */
#define LK_NREGS 6
typedef struct lk_regs {
  uintptr_t r[LK_NREGS];
  uintptr_t sp;
} lk_regs;

/* An exported entry point NAME that first stores its caller's registers and stack pointer in the
** thread-local lk_regs CTX, then jumps to BODY with the same arguments (r10, r11: scratch). */
#define LK_CAPTURING_ENTRY(name, ctx, body)                                  \
  __asm__(".text\n\t.globl " #name "\n\t.type " #name ",@function\n"        \
          #name ":\n\t"                                                      \
          "movq " #ctx "@gottpoff(%rip), %r11\n\t"                           \
          "movq %rbx, %fs:0(%r11)\n\t"                                       \
          "movq %rbp, %fs:8(%r11)\n\t"                                       \
          "movq %r12, %fs:16(%r11)\n\t"                                      \
          "movq %r13, %fs:24(%r11)\n\t"                                      \
          "movq %r14, %fs:32(%r11)\n\t"                                      \
          "movq %r15, %fs:40(%r11)\n\t"                                      \
          "leaq 8(%rsp), %r10\n\t"                                           \
          "movq %r10, %fs:48(%r11)\n\t"                                      \
          "jmp " #body "\n\t"                                                \
          ".size " #name ", .-" #name "\n\t"                                  \
          ".previous");

#endif
