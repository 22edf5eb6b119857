/* ljleak: the FFI ABI of the preloaded libraries, declared once. libljleak.so exports all but the
** Valgrind part; libljleak_vg.so exports that part and the Lua VM part. lua/ljleak/vm.lua's cdef is
** checked against this block by t/abi_spec.lua (between the BEGIN and END lines). */
#ifndef LJLEAK_H
#define LJLEAK_H

#include <stddef.h>
#include <stdint.h>

/* BEGIN FFI ABI */
int ljleak_tracker_active(void);
int ljleak_lua_probe(uintptr_t L, int step);
int ljleak_lua_attach(uintptr_t L, int depth);
void ljleak_lua_detach(void);
uintptr_t ljleak_lua_attached(void);
void ljleak_trace_start(int tr, const char *src, int line, const char *name);
void ljleak_trace_flush(void);
uint32_t ljleak_ctx_make(uint32_t epoch, const char *tag, const char *note);
void ljleak_ctx_set(uint32_t ctx);
int ljleak_annotate(void *p, const char *note);
uint64_t ljleak_live_blocks(uint32_t lo, uint32_t hi);
size_t ljleak_live_addrs(uint32_t lo, uint32_t hi, uintptr_t *out, size_t cap);
size_t ljleak_live(uint32_t lo, uint32_t hi, char **raw);
size_t ljleak_check(uint32_t lo, uint32_t hi, char **raw);
size_t ljleak_unheld(uint32_t lo, uint32_t hi, uintptr_t *out, size_t cap);
size_t ljleak_lua_raw(uint32_t id, char **raw);
void ljleak_raw_free(char *raw);
typedef struct ljleak_live_count {
  uint64_t stack;
  uint64_t blocks, bytes;
  uint32_t site, epoch;
} ljleak_live_count;
int ljleak_site_live(uint32_t lo, uint32_t hi, ljleak_live_count *out, int cap);
size_t ljleak_live_sites(const uint32_t *sites, int n, char **raw);
int ljleak_memstat(uint64_t *out);
int ljleak_soak_on(void (*cb)(void));
void ljleak_finalizer_enter(void);
int ljleak_finalizer_leave(uintptr_t *out, int cap);
uint32_t ljleak_here(void);
void ljleak_pause(int on);
int ljleak_vg_running(void);
void ljleak_vg_mark(const char *text);
int ljleak_vg_leak_check(void *ms, unsigned long *out);
/* END FFI ABI */

#endif
