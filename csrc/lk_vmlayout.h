/* ljleak: learning where a LuaJIT build keeps the global_State fields the tracker reads (cur_L,
** vmstate, jit_base), from values observed while C code called from Lua runs. Pure functions. */
#ifndef LK_VMLAYOUT_H
#define LK_VMLAYOUT_H

#include <stdint.h>
#include <string.h>

#define LK_VM_SCAN 1024     /* bytes of global_State searched */
#define LK_VM_MAXCAND 32
#define LK_VMST_C (-2)      /* ~LJ_VMST_C: the VM runs C code (stable in LuaJIT 2.0 and 2.1) */

typedef struct lk_vm_probe {
  int curl[LK_VM_MAXCAND], ncurl;   /* offsets of pointer words equal to the running lua_State */
  int vmst[LK_VM_MAXCAND], nvmst;   /* offsets of int32 words equal to LK_VMST_C */
} lk_vm_probe;

typedef struct lk_vm_layout {
  int curl, vmstate, jitbase;       /* offsets in global_State, -1 when unknown */
} lk_vm_layout;

/* First probe, inside a C function called from Lua running in L: every candidate offset. */
static inline void lk_vm_probe_first(lk_vm_probe *p, const char *g, const void *L)
{
  int off;
  p->ncurl = p->nvmst = 0;
  for (off = 0; off + 8 <= LK_VM_SCAN; off += 8) {
    const void *w;
    memcpy(&w, g + off, sizeof(w));
    if (w == L && p->ncurl < LK_VM_MAXCAND) p->curl[p->ncurl++] = off;
  }
  for (off = 0; off + 4 <= LK_VM_SCAN; off += 4) {
    int32_t v;
    memcpy(&v, g + off, 4);
    if (v == LK_VMST_C && p->nvmst < LK_VM_MAXCAND) p->vmst[p->nvmst++] = off;
  }
}

/* Each later probe, from another lua_State L: keep the candidates that followed. */
static inline void lk_vm_probe_next(lk_vm_probe *p, const char *g, const void *L)
{
  int i, k = 0;
  for (i = 0; i < p->ncurl; i++) {
    const void *w;
    memcpy(&w, g + p->curl[i], sizeof(w));
    if (w == L) p->curl[k++] = p->curl[i];
  }
  p->ncurl = k;
  for (i = k = 0; i < p->nvmst; i++) {
    int32_t v;
    memcpy(&v, g + p->vmst[i], 4);
    if (v == LK_VMST_C) p->vmst[k++] = p->vmst[i];
  }
  p->nvmst = k;
}

/* The layout the probes leave, or a reason why there is none. cur_L must be one word; jit_base is
** the word after it (NULL here: no trace runs); vmstate the one int32 left below cur_L, or among
** several, the offset known from released builds (184 in LuaJIT 2.1 since 2020, 128 before). */
static inline const char *lk_vm_layout_of(const lk_vm_probe *p, const char *g, lk_vm_layout *out)
{
  static const int known[] = { 184, 128 };
  int i, k, found = -1, n = 0;
  const void *jb;
  out->curl = out->vmstate = out->jitbase = -1;
  if (p->ncurl == 0) return "no word of global_State follows the running lua_State (cur_L)";
  if (p->ncurl > 1) return "several words of global_State follow the running lua_State";
  out->curl = p->curl[0];
  out->jitbase = out->curl + 8;
  if (out->jitbase + 8 > LK_VM_SCAN) return "cur_L is too far into global_State";
  memcpy(&jb, g + out->jitbase, sizeof(jb));
  if (jb != NULL) return "the word after cur_L (jit_base) is not NULL outside JIT code";
  for (i = 0; i < p->nvmst; i++)
    if (p->vmst[i] < out->curl) { found = p->vmst[i]; n++; }
  if (n > 1) {
    found = -1;
    for (k = 0; k < 2 && found < 0; k++)
      for (i = 0; i < p->nvmst; i++)
        if (p->vmst[i] == known[k]) found = known[k];
  }
  if (found < 0) return "vmstate (~LJ_VMST_C while C code runs) not found in global_State";
  out->vmstate = found;
  return NULL;
}

#endif
