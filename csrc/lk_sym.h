/* lk_sym.h: symbolizer for code offsets in one ELF object (libdw/libdwfl).
** Used by the Lua C module (lk_lua.c); never linked into the tracker. */

#ifndef LK_SYM_H
#define LK_SYM_H

#include <stdint.h>

typedef struct lk_sym lk_sym;

/* What is known about one offset; pointers stay valid until lk_sym_close. */
typedef struct lk_sym_info {
  const char *func;	/* symbol name (no @version), NULL if none covers the offset;
			   valid until the next lookup */
  uint64_t func_off;	/* offset from the start of that symbol */
  const char *file;	/* source file from the line table, or NULL */
  int line;		/* source line, 0 if unknown */
  int column;		/* source column, 0 if unknown */
} lk_sym_info;

/* Open PATH (an ELF file) with its load bias at 0, so that addresses are the
** file's own virtual addresses. Returns NULL and sets *err on failure. */
lk_sym *lk_sym_open(const char *path, const char **err);

/* Look up OFF (a file vaddr; the caller has already stepped back from a
** return address into the call instruction). Fills *info; returns 0. */
int lk_sym_lookup(lk_sym *s, uint64_t off, lk_sym_info *info);

/* The same, from the symbol table only (info->func, info->func_off): never reads DWARF. */
int lk_sym_name(lk_sym *s, uint64_t off, lk_sym_info *info);

/* The key a disk cache of lookups in the object at PATH is valid under (build ID, then the state
** of the places its separate debug information may come from), into OUT; 0 when it has none
** (no build ID, unreadable) or it does not fit. */
int lk_sym_cache_key(const char *path, char *out, size_t size);
/* One frame of a chain of inlined calls (lk_sym_inlines). */
typedef struct lk_sym_frame {
  const char *func;	/* the function's linkage name if it has one, else its name; or NULL */
  const char *file;	/* where it calls the next inner one (DW_AT_call_file), or NULL */
  int line;		/* and the line of that call, 0 if unknown */
} lk_sym_frame;

/* The inlined calls at OFF (as for lk_sym_lookup), as Valgrind shows them: OUT[0] the innermost
** inlined function (its file and line are OFF's own, from the line table: left NULL and 0 here),
** then each function that inlined the one before it, with the file and line of that call, down
** to the real (out-of-line) function last. Returns how many frames were written (at most MAX),
** 0 when OFF is in no inlined code. */
int lk_sym_inlines(lk_sym *s, uint64_t off, lk_sym_frame *out, int max);

/* The path this symbolizer was opened for. */
const char *lk_sym_path(const lk_sym *s);

void lk_sym_close(lk_sym *s);

#endif
