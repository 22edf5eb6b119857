/* ljleak: the FFI ABI of the preloaded libraries, declared once. libljleak.so exports all but the
** Valgrind part; libljleak_vg.so exports that part and the Lua VM part. lua/ljleak/vm.lua's cdef is
** checked against this block by t/abi_spec.lua (between the BEGIN and END lines). */
#ifndef LJLEAK_H
#define LJLEAK_H

#include <stdint.h>

/* BEGIN FFI ABI */
typedef struct ljleak_rec { uint32_t site, kind; uint64_t blocks, bytes; } ljleak_rec;
typedef struct ljleak_site_info {
  const char *fn; uint32_t depth, lua, ctx, pad; const uintptr_t *ips;
} ljleak_site_info;
int ljleak_tracker_active(void);
int ljleak_lua_probe(uintptr_t L, int step);
int ljleak_lua_attach(uintptr_t L, int depth);
void ljleak_lua_detach(void);
void ljleak_trace_start(int tr, const char *src, int line, const char *name);
void ljleak_trace_flush(void);
uint32_t ljleak_ctx_make(uint32_t epoch, const char *tag, const char *note);
void ljleak_ctx_set(uint32_t ctx);
const char *ljleak_ctx_tag(uint32_t ctx, const char **note, uint32_t *epoch);
int ljleak_annotate(void *p, const char *note);
int ljleak_live(uint32_t lo, uint32_t hi, ljleak_rec *out, int cap);
int ljleak_check(uint32_t lo, uint32_t hi, ljleak_rec *out, int cap);
int ljleak_site(uint32_t id, ljleak_site_info *out);
const char *ljleak_module_of(uintptr_t ip, uintptr_t *bias);
int ljleak_lua_text(uint32_t id, char *buf, int len);
void ljleak_finalizer_enter(void);
int ljleak_finalizer_leave(uintptr_t *out, int cap);
uint32_t ljleak_here(void);
void ljleak_pause(int on);
int ljleak_vg_running(void);
void ljleak_vg_mark(const char *text);
int ljleak_vg_leak_check(void *ms, unsigned long *out);
/* END FFI ABI */

#endif
