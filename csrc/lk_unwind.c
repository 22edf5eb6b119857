/* ljleak tracker: the tracker's own unwinder (see lk_unwind.h).
**
** Each return address gets one rule, found once from the call frame information of the object it
** is in (the binary search table of .eh_frame_hdr, then the FDE's and CIE's instructions, run up to
** the address) and then kept in a cache that every thread reads without a lock:
**   the caller's stack pointer (the CFA) is RSP or RBP plus an offset; the return address is at
**   CFA-8; RBP is kept, or was saved at CFA plus an offset;
**   or a signal frame (the caller's registers are in the ucontext at RSP);
**   or the end of the stack (the return address is undefined: _start, clone);
**   or no information (JIT code): the stack ends there, as with libunwind;
**   or anything else (a DWARF expression, a register other than RSP or RBP): "hard", and
**   lk_stack.c asks libunwind for the whole stack.
** Every read is of the calling thread's stack, between the first stack pointer and the stack's end:
** a frame whose rule points elsewhere ends the stack. Nothing here allocates or takes a lock that a
** signal handler on the same thread could wait for (the cache and the object list are written
** under try-locks: a writer that finds them taken just does not keep what it found). */
#include "lk_unwind.h"
#include "lk_lock.h"
#include "lk_state.h"
#include "lk_sys.h"

#include <link.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__)

enum { LK_R_EMPTY, LK_R_RSP, LK_R_RBP, LK_R_SIG, LK_R_END, LK_R_NOINFO, LK_R_HARD };

/* A rule in one word: kind (bits 0-7), where RBP was saved from the CFA (bits 16-31, 0: kept),
** the CFA's offset from its register (bits 32-63). */
static inline uint64_t lk_rule(int kind, int32_t cfa_off, int16_t rbp_off)
{
  return (uint64_t)(uint8_t)kind | (uint64_t)(uint16_t)rbp_off << 16 | (uint64_t)(uint32_t)cfa_off << 32;
}
#define LK_RULE_KIND(v) ((int)((v) & 0xff))
#define LK_RULE_RBP(v) ((int16_t)(uint16_t)((v) >> 16))
#define LK_RULE_CFA(v) ((int32_t)(uint32_t)((v) >> 32))

/* -- The rule cache ------------------------------------------------------------------------
** Open addressing keyed by the looked-up address. A reader takes key, value, key again: a writer
** clears the key before it changes the value, so two equal keys mean the value is theirs (x86-64
** keeps stores in order). It grows by copying into a table four times the size; old tables stay
** mapped (a reader may be in one): at most a third of the memory the newest one takes. */

typedef struct { volatile uintptr_t key; volatile uint64_t val; } lk_uslot;
typedef struct { uint32_t mask, n; lk_uslot s[]; } lk_ucache;

#define LK_UC_FIRST 512          /* slots: 8 KiB */
#define LK_UC_MAX (1u << 20)     /* slots: 16 MiB, then no more are kept */
#define LK_UC_PROBES 8

static lk_ucache *volatile lk_uc;
static volatile int lk_uc_lock;

static inline uint32_t lk_uhash(uintptr_t key)
{
  uint64_t h = (uint64_t)key * 0x9e3779b97f4a7c15ull;
  return (uint32_t)(h >> 32);
}

static inline int lk_uc_get(uintptr_t key, uint64_t *val)
{
  lk_ucache *t = __atomic_load_n(&lk_uc, __ATOMIC_ACQUIRE);
  uint32_t i, k;
  if (!t) return 0;
  for (i = lk_uhash(key) & t->mask, k = 0; k < LK_UC_PROBES; k++, i = (i + 1) & t->mask) {
    uintptr_t k1 = __atomic_load_n(&t->s[i].key, __ATOMIC_ACQUIRE);
    if (k1 == key) {
      uint64_t v = __atomic_load_n(&t->s[i].val, __ATOMIC_ACQUIRE);
      if (__atomic_load_n(&t->s[i].key, __ATOMIC_ACQUIRE) != key) return 0;
      *val = v;
      return 1;
    }
    if (!k1) return 0;
  }
  return 0;
}

/* Into table T (the writer's lock held). */
static void lk_uc_store(lk_ucache *t, uintptr_t key, uint64_t val)
{
  uint32_t i, k, first = lk_uhash(key) & t->mask;
  for (i = first, k = 0; k < LK_UC_PROBES; k++, i = (i + 1) & t->mask) {
    uintptr_t cur = t->s[i].key;
    if (cur == key) return;
    if (!cur) {
      __atomic_store_n(&t->s[i].val, val, __ATOMIC_RELEASE);
      __atomic_store_n(&t->s[i].key, key, __ATOMIC_RELEASE);
      t->n++;
      return;
    }
  }
  __atomic_store_n(&t->s[first].key, 0, __ATOMIC_RELEASE);  /* every probe taken: replace */
  __atomic_store_n(&t->s[first].val, val, __ATOMIC_RELEASE);
  __atomic_store_n(&t->s[first].key, key, __ATOMIC_RELEASE);
}

static void lk_uc_put(uintptr_t key, uint64_t val)
{
  lk_ucache *t;
  if (__atomic_exchange_n(&lk_uc_lock, 1, __ATOMIC_ACQUIRE)) return;  /* taken: keep nothing */
  t = lk_uc;
  if (!t || (t->n + 1) * 2 > t->mask + 1) {
    uint32_t size = t ? (t->mask + 1) * 4 : LK_UC_FIRST, i;
    lk_ucache *g = size <= LK_UC_MAX ? lk_sysmap(sizeof(lk_ucache) + size * sizeof(lk_uslot)) : NULL;
    if (g) {
      g->mask = size - 1;
      for (i = 0; t && i <= t->mask; i++)
        if (t->s[i].key) lk_uc_store(g, t->s[i].key, t->s[i].val);
      __atomic_store_n(&lk_uc, g, __ATOMIC_RELEASE);
      t = g;
    }
  }
  if (t && (t->n + 1) * 2 <= t->mask + 1) lk_uc_store(t, key, val);
  __atomic_store_n(&lk_uc_lock, 0, __ATOMIC_RELEASE);
}

/* -- Loaded objects ------------------------------------------------------------------------
** Their executable segments and .eh_frame_hdr, read with dl_iterate_phdr when an address is in
** none of them and something was loaded or unloaded since the last read. */

#define LK_UOBJS 1024
typedef struct {
  uintptr_t lo, hi;           /* an executable segment */
  const uint8_t *hdr;         /* its object's .eh_frame_hdr, or NULL */
  uintptr_t hdr_end;          /* ... and where it ends */
  uintptr_t obj_lo, obj_hi;   /* the object's extent: every FDE and CIE read lies inside */
} lk_uobj;
typedef struct { int n; unsigned long long adds, subs; lk_uobj o[LK_UOBJS]; } lk_uobjs;

static lk_uobjs *volatile lk_uo;
static volatile int lk_uo_lock;

static int lk_uobj_cb(struct dl_phdr_info *info, size_t sz, void *ud)
{
  lk_uobjs *t = ud;
  const uint8_t *hdr = NULL;
  uintptr_t hdr_end = 0, olo = UINTPTR_MAX, ohi = 0;
  int i;
  (void)sz;
  t->adds = info->dlpi_adds;
  t->subs = info->dlpi_subs;
  for (i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_GNU_EH_FRAME) {
      hdr = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
      hdr_end = (uintptr_t)hdr + ph->p_memsz;
    } else if (ph->p_type == PT_LOAD) {
      if (info->dlpi_addr + ph->p_vaddr < olo) olo = info->dlpi_addr + ph->p_vaddr;
      if (info->dlpi_addr + ph->p_vaddr + ph->p_memsz > ohi) ohi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
    }
  }
  for (i = 0; i < info->dlpi_phnum && t->n < LK_UOBJS; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    lk_uobj *o = &t->o[t->n];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    o->lo = info->dlpi_addr + ph->p_vaddr;
    o->hi = o->lo + ph->p_memsz;
    o->hdr = hdr && (uintptr_t)hdr >= olo && hdr_end <= ohi ? hdr : NULL;
    o->hdr_end = hdr_end;
    o->obj_lo = olo;
    o->obj_hi = ohi;
    t->n++;
  }
  return 0;
}

static int lk_uobj_counts_cb(struct dl_phdr_info *info, size_t sz, void *ud)
{
  unsigned long long *c = ud;
  (void)sz;
  c[0] = info->dlpi_adds;
  c[1] = info->dlpi_subs;
  return 1;  /* the first object tells */
}

/* The object of IP: 1 and *obj (whose hdr is NULL when it has no .eh_frame_hdr), or 0. */
static int lk_uobj_find(uintptr_t ip, lk_uobj *obj)
{
  int i, tries;
  for (tries = 0; tries < 2; tries++) {
    lk_uobjs *t = __atomic_load_n(&lk_uo, __ATOMIC_ACQUIRE), *g;
    unsigned long long c[2] = {0, 0};
    for (i = 0; t && i < t->n; i++) {
      if (ip >= t->o[i].lo && ip < t->o[i].hi) {
        *obj = t->o[i];
        return 1;
      }
    }
    if (t) {
      dl_iterate_phdr(lk_uobj_counts_cb, c);
      if (c[0] == t->adds && c[1] == t->subs) return 0;  /* nothing new: no object has IP */
    }
    if (__atomic_exchange_n(&lk_uo_lock, 1, __ATOMIC_ACQUIRE)) return 0;
    g = lk_sysmap(sizeof(lk_uobjs));  /* the old list stays: a reader may be in it */
    if (g) {
      dl_iterate_phdr(lk_uobj_cb, g);
      __atomic_store_n(&lk_uo, g, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&lk_uo_lock, 0, __ATOMIC_RELEASE);
    if (!g) return 0;
  }
  return 0;
}

/* -- Reading call frame information ---------------------------------------------------------- */

#define LK_PE_OMIT 0xff

static uint64_t lk_uleb(const uint8_t **pp, const uint8_t *end)
{
  const uint8_t *p = *pp;
  uint64_t v = 0;
  int shift = 0;
  while (p < end) {
    uint8_t b = *p++;
    if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
    shift += 7;
    if (!(b & 0x80)) break;
  }
  *pp = p;
  return v;
}

static int64_t lk_sleb(const uint8_t **pp, const uint8_t *end)
{
  const uint8_t *p = *pp;
  int64_t v = 0;
  int shift = 0;
  uint8_t b = 0;
  while (p < end) {
    b = *p++;
    if (shift < 64) v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
    shift += 7;
    if (!(b & 0x80)) break;
  }
  if (shift < 64 && (b & 0x40)) v |= -((int64_t)1 << shift);
  *pp = p;
  return v;
}

/* A pointer in encoding ENC at *pp; DATA: the base of DW_EH_PE_datarel. 0 if it cannot be read
** (an indirect one too: nothing here needs the word it points to). */
static int lk_enc(uint8_t enc, const uint8_t **pp, const uint8_t *end, uintptr_t data, uintptr_t *out)
{
  const uint8_t *p = *pp;
  uintptr_t base = 0, v;
  if (enc == LK_PE_OMIT || (enc & 0x80)) return 0;
  switch (enc & 0x70) {
  case 0x00: break;
  case 0x10: base = (uintptr_t)p; break;   /* pcrel */
  case 0x30: base = data; break;           /* datarel */
  default: return 0;
  }
  switch (enc & 0x0f) {
  case 0x00: case 0x04: case 0x0c:
    if (end - p < 8) return 0;
    { uint64_t x; memcpy(&x, p, 8); v = (uintptr_t)x; }
    p += 8;
    break;
  case 0x03: case 0x0b:
    if (end - p < 4) return 0;
    if (enc & 0x08) { int32_t x; memcpy(&x, p, 4); v = (uintptr_t)(intptr_t)x; }
    else { uint32_t x; memcpy(&x, p, 4); v = x; }
    p += 4;
    break;
  case 0x02: case 0x0a:
    if (end - p < 2) return 0;
    if (enc & 0x08) { int16_t x; memcpy(&x, p, 2); v = (uintptr_t)(intptr_t)x; }
    else { uint16_t x; memcpy(&x, p, 2); v = x; }
    p += 2;
    break;
  case 0x01: v = (uintptr_t)lk_uleb(&p, end); break;
  case 0x09: v = (uintptr_t)lk_sleb(&p, end); break;
  default: return 0;
  }
  *pp = p;
  *out = v + base;
  return 1;
}

/* What the instructions say at one address: the CFA's register and offset, RBP's and the return
** address's rules. */
enum { LK_U_SAME, LK_U_OFF, LK_U_UNDEF, LK_U_HARD };
typedef struct {
  int cfa_reg;            /* DWARF number, -1: an expression */
  int64_t cfa_off;
  int rbp, ra;            /* LK_U_* */
  int64_t rbp_off, ra_off;
} lk_urow;

#define LK_DW_RBP 6
#define LK_DW_RSP 7
#define LK_DW_RA 16

static void lk_urow_set(lk_urow *r, uint64_t reg, int how, int64_t off)
{
  if (reg == LK_DW_RBP) { r->rbp = how; r->rbp_off = off; }
  else if (reg == LK_DW_RA) { r->ra = how; r->ra_off = off; }
}

static void lk_urow_restore(lk_urow *r, const lk_urow *init, uint64_t reg)
{
  if (reg == LK_DW_RBP) { r->rbp = init->rbp; r->rbp_off = init->rbp_off; }
  else if (reg == LK_DW_RA) { r->ra = init->ra; r->ra_off = init->ra_off; }
}

/* Runs the instructions in [p, end) for the row that holds TARGET (LOC: the address they start
** at; INIT: the CIE's row, for DW_CFA_restore). 0 on an instruction this unwinder does not know. */
static int lk_cfa_run(const uint8_t *p, const uint8_t *end, uintptr_t loc, uintptr_t target,
                      uint64_t code_align, int64_t data_align, uint8_t fde_enc, lk_urow *r,
                      const lk_urow *init)
{
  lk_urow stack[8];
  int depth = 0;
  while (p < end) {
    uint8_t op = *p++;
    uint64_t reg, len;
    uintptr_t adv;
    switch (op & 0xc0) {
    case 0x40:
      adv = (op & 0x3f) * code_align;
      goto advance;
    case 0x80:
      lk_urow_set(r, op & 0x3f, LK_U_OFF, (int64_t)lk_uleb(&p, end) * data_align);
      continue;
    case 0xc0:
      lk_urow_restore(r, init, op & 0x3f);
      continue;
    }
    switch (op) {
    case 0x00: continue;                                      /* nop */
    case 0x01:                                                /* set_loc */
      if (!lk_enc(fde_enc, &p, end, 0, &adv)) return 0;
      if (adv > target) return 1;
      loc = adv;
      continue;
    case 0x02: if (end - p < 1) return 0; adv = p[0] * code_align; p += 1; goto advance;
    case 0x03: { uint16_t x; if (end - p < 2) return 0; memcpy(&x, p, 2); p += 2; adv = x * code_align; goto advance; }
    case 0x04: { uint32_t x; if (end - p < 4) return 0; memcpy(&x, p, 4); p += 4; adv = x * code_align; goto advance; }
    case 0x05:                                                /* offset_extended */
      reg = lk_uleb(&p, end);
      lk_urow_set(r, reg, LK_U_OFF, (int64_t)lk_uleb(&p, end) * data_align);
      continue;
    case 0x06: lk_urow_restore(r, init, lk_uleb(&p, end)); continue;
    case 0x07: lk_urow_set(r, lk_uleb(&p, end), LK_U_UNDEF, 0); continue;
    case 0x08: lk_urow_set(r, lk_uleb(&p, end), LK_U_SAME, 0); continue;
    case 0x09:                                                /* register */
      reg = lk_uleb(&p, end);
      lk_uleb(&p, end);
      lk_urow_set(r, reg, LK_U_HARD, 0);
      continue;
    case 0x0a:                                                /* remember_state */
      if (depth == 8) return 0;
      stack[depth++] = *r;
      continue;
    case 0x0b:                                                /* restore_state */
      if (!depth) return 0;
      *r = stack[--depth];
      continue;
    case 0x0c:                                                /* def_cfa */
      r->cfa_reg = (int)lk_uleb(&p, end);
      r->cfa_off = (int64_t)lk_uleb(&p, end);
      continue;
    case 0x0d: r->cfa_reg = (int)lk_uleb(&p, end); continue;
    case 0x0e: r->cfa_off = (int64_t)lk_uleb(&p, end); continue;
    case 0x0f:                                                /* def_cfa_expression */
      len = lk_uleb(&p, end);
      if (len > (uint64_t)(end - p)) return 0;
      p += len;
      r->cfa_reg = -1;
      continue;
    case 0x10: case 0x16:                                     /* expression, val_expression */
      reg = lk_uleb(&p, end);
      len = lk_uleb(&p, end);
      if (len > (uint64_t)(end - p)) return 0;
      p += len;
      lk_urow_set(r, reg, LK_U_HARD, 0);
      continue;
    case 0x11:                                                /* offset_extended_sf */
      reg = lk_uleb(&p, end);
      lk_urow_set(r, reg, LK_U_OFF, lk_sleb(&p, end) * data_align);
      continue;
    case 0x12:                                                /* def_cfa_sf */
      r->cfa_reg = (int)lk_uleb(&p, end);
      r->cfa_off = lk_sleb(&p, end) * data_align;
      continue;
    case 0x13: r->cfa_off = lk_sleb(&p, end) * data_align; continue;
    case 0x14: case 0x15:                                     /* val_offset(_sf) */
      reg = lk_uleb(&p, end);
      lk_uleb(&p, end);
      lk_urow_set(r, reg, LK_U_HARD, 0);
      continue;
    case 0x2e: lk_uleb(&p, end); continue;                    /* GNU_args_size */
    case 0x2f:                                                /* GNU_negative_offset_extended */
      reg = lk_uleb(&p, end);
      lk_urow_set(r, reg, LK_U_OFF, -(int64_t)lk_uleb(&p, end) * data_align);
      continue;
    default:
      return 0;
    }
  advance:
    if (loc + adv > target) return 1;
    loc += adv;
  }
  return 1;
}

/* The rule for KEY (a return address less one, or an exact address) from its FDE. */
static uint64_t lk_rule_find(uintptr_t key)
{
  const uint8_t *hdr, *p, *tab, *fde, *cie, *fend, *cend, *aug, *q;
  uintptr_t eh, count, pc_begin, pc_range;
  uint8_t fde_enc = 0;
  uint32_t len32, lo_i, hi_i;
  int32_t cie_off;
  uint64_t code_align;
  int64_t data_align;
  int signal = 0, zaug = 0;
  lk_urow init, row;
  lk_uobj obj;

  if (!lk_uobj_find(key, &obj)) return lk_rule(LK_R_NOINFO, 0, 0);
  hdr = obj.hdr;
  if (!hdr || obj.hdr_end - (uintptr_t)hdr < 20 || hdr[0] != 1) return lk_rule(LK_R_HARD, 0, 0);
  p = hdr + 4;   /* the two fields take 16 bytes at most */
  if (!lk_enc(hdr[1], &p, hdr + 20, (uintptr_t)hdr, &eh)) return lk_rule(LK_R_HARD, 0, 0);
  if (!lk_enc(hdr[2], &p, hdr + 20, (uintptr_t)hdr, &count)) return lk_rule(LK_R_HARD, 0, 0);
  if (hdr[3] != 0x3b || !count) return lk_rule(LK_R_HARD, 0, 0);  /* datarel sdata4 pairs */
  tab = p;
  if (count > (obj.hdr_end - (uintptr_t)tab) / 8) return lk_rule(LK_R_HARD, 0, 0);
  /* The last entry whose start is at or below KEY. */
  lo_i = 0;
  hi_i = (uint32_t)count;
  while (hi_i - lo_i > 1) {
    uint32_t mid = lo_i + (hi_i - lo_i) / 2;
    int32_t start;
    memcpy(&start, tab + 8 * (size_t)mid, 4);
    if ((uintptr_t)hdr + (intptr_t)start <= key) lo_i = mid;
    else hi_i = mid;
  }
  {
    int32_t start, off;
    memcpy(&start, tab + 8 * (size_t)lo_i, 4);
    memcpy(&off, tab + 8 * (size_t)lo_i + 4, 4);
    if ((uintptr_t)hdr + (intptr_t)start > key) return lk_rule(LK_R_NOINFO, 0, 0);
    fde = hdr + off;
  }
  /* The FDE, then its CIE: both inside the object. */
#define LK_INSIDE(p, n) ((uintptr_t)(p) >= obj.obj_lo && (uintptr_t)(p) <= obj.obj_hi - (n))
  if (!LK_INSIDE(fde, 8)) return lk_rule(LK_R_HARD, 0, 0);
  memcpy(&len32, fde, 4);
  if (len32 < 8 || len32 == 0xffffffffu || !LK_INSIDE(fde, 4 + (uintptr_t)len32)) return lk_rule(LK_R_HARD, 0, 0);
  fend = fde + 4 + len32;
  memcpy(&cie_off, fde + 4, 4);
  if (cie_off <= 0) return lk_rule(LK_R_HARD, 0, 0);
  cie = fde + 4 - cie_off;
  if (!LK_INSIDE(cie, 8)) return lk_rule(LK_R_HARD, 0, 0);
  memcpy(&len32, cie, 4);
  if (len32 < 8 || len32 == 0xffffffffu || !LK_INSIDE(cie, 4 + (uintptr_t)len32)) return lk_rule(LK_R_HARD, 0, 0);
#undef LK_INSIDE
  cend = cie + 4 + len32;
  p = cie + 8;                                   /* past length and CIE id */
  if (*p != 1 && *p != 3) return lk_rule(LK_R_HARD, 0, 0);
  p++;
  aug = p;
  while (p < cend && *p) p++;
  if (p >= cend) return lk_rule(LK_R_HARD, 0, 0);
  p++;
  code_align = lk_uleb(&p, cend);
  data_align = lk_sleb(&p, cend);
  if (cie[8] == 1) p++; else lk_uleb(&p, cend);   /* the return address column */
  if (aug[0] == 'z') {
    uint64_t alen = lk_uleb(&p, cend);
    const uint8_t *adata = p;
    zaug = 1;
    if (alen > (uint64_t)(cend - p)) return lk_rule(LK_R_HARD, 0, 0);
    for (q = aug + 1; *q && p < adata + alen; q++) {
      if (*q == 'R') fde_enc = *p++;
      else if (*q == 'L') p++;                   /* the LSDA's encoding: not needed */
      else if (*q == 'S') signal = 1;
      else if (*q == 'P') {
        uintptr_t pers;
        uint8_t enc = *p++;   /* skipped: read as a plain value (no pointer followed) */
        if (!lk_enc(enc & 0x7f, &p, adata + alen, 0, &pers)) return lk_rule(LK_R_HARD, 0, 0);
      } else {
        break;                                   /* others: their data is skipped below */
      }
    }
    for (; *q; q++) if (*q == 'S') signal = 1;
    p = adata + alen;
  } else if (aug[0]) {
    return lk_rule(LK_R_HARD, 0, 0);
  }
  if (signal) return lk_rule(LK_R_SIG, 0, 0);
  memset(&init, 0, sizeof(init));
  init.cfa_reg = LK_DW_RSP;
  init.rbp = LK_U_SAME;
  init.ra = LK_U_SAME;
  if (!lk_cfa_run(p, cend, 0, (uintptr_t)-1, code_align, data_align, fde_enc, &init, &init))
    return lk_rule(LK_R_HARD, 0, 0);
  /* The FDE's range and instructions. */
  q = fde + 8;
  if (!lk_enc(fde_enc, &q, fend, 0, &pc_begin)) return lk_rule(LK_R_HARD, 0, 0);
  if (!lk_enc(fde_enc & 0x0f, &q, fend, 0, &pc_range)) return lk_rule(LK_R_HARD, 0, 0);
  if (key < pc_begin || key - pc_begin >= pc_range) return lk_rule(LK_R_NOINFO, 0, 0);
  if (zaug) {
    uint64_t alen = lk_uleb(&q, fend);
    if (alen > (uint64_t)(fend - q)) return lk_rule(LK_R_HARD, 0, 0);
    q += alen;
  }
  row = init;
  if (!lk_cfa_run(q, fend, pc_begin, key, code_align, data_align, fde_enc, &row, &init))
    return lk_rule(LK_R_HARD, 0, 0);
  if (row.ra == LK_U_UNDEF) return lk_rule(LK_R_END, 0, 0);
  if (row.ra != LK_U_OFF || row.ra_off != -8) return lk_rule(LK_R_HARD, 0, 0);
  if (row.cfa_reg != LK_DW_RSP && row.cfa_reg != LK_DW_RBP) return lk_rule(LK_R_HARD, 0, 0);
  if (row.cfa_off < 8 || row.cfa_off > INT32_MAX) return lk_rule(LK_R_HARD, 0, 0);
  if (row.rbp == LK_U_HARD) return lk_rule(LK_R_HARD, 0, 0);
  if (row.rbp == LK_U_OFF && (row.rbp_off > -8 || row.rbp_off < INT16_MIN)) return lk_rule(LK_R_HARD, 0, 0);
  return lk_rule(row.cfa_reg == LK_DW_RSP ? LK_R_RSP : LK_R_RBP, (int32_t)row.cfa_off,
                 row.rbp == LK_U_OFF ? (int16_t)row.rbp_off : 0);
}

/* -- Stepping -------------------------------------------------------------------------------- */

#define LK_UC_GREGS 40   /* offsetof(ucontext_t, uc_mcontext.gregs) */
#define LK_UC_RBP 10
#define LK_UC_RSP 15
#define LK_UC_RIP 16

static inline uint64_t lk_rule_of(uintptr_t key)
{
  uint64_t v;
  if (LIKELY(lk_uc_get(key, &v))) return v;
  v = lk_rule_find(key);
  lk_uc_put(key, v);
  return v;
}

/* A real dlclose happened (lk_code_gen moved): start again from nothing. Old tables stay mapped
** (a reader may be in one). Try-locks: the next unwind tries again. */
static unsigned lk_code_seen;

static NOINLINE void lk_unw_forget(void)
{
  unsigned gen = __atomic_load_n(&lk_code_gen, __ATOMIC_ACQUIRE);
  if (__atomic_exchange_n(&lk_uc_lock, 1, __ATOMIC_ACQUIRE)) return;
  if (__atomic_exchange_n(&lk_uo_lock, 1, __ATOMIC_ACQUIRE)) {
    __atomic_store_n(&lk_uc_lock, 0, __ATOMIC_RELEASE);
    return;
  }
  __atomic_store_n(&lk_uc, NULL, __ATOMIC_RELEASE);
  __atomic_store_n(&lk_uo, NULL, __ATOMIC_RELEASE);
  lk_code_seen = gen;
  __atomic_store_n(&lk_uo_lock, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&lk_uc_lock, 0, __ATOMIC_RELEASE);
}

NOINLINE int lk_unw_trace(uintptr_t *out, int max, int *hard)
{
  uintptr_t ip, sp, bp, lo, hi;
  int n = 0, exact = 1;
  __asm__ volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2" : "=r"(ip), "=r"(sp), "=r"(bp));
  *hard = 0;
  if (UNLIKELY(__atomic_load_n(&lk_code_gen, __ATOMIC_ACQUIRE) != lk_code_seen)) lk_unw_forget();
  lo = lk_self.stack_lo;
  hi = lk_self.stack_hi;
  if (!hi || sp < lo || sp >= hi) { *hard = 1; return 0; }
  lo = sp;   /* everything read lies in [lo, hi): the stack in use */
  while (n < max) {
    uint64_t v;
    uintptr_t cfa;
    int16_t rbp_off;
    out[n++] = ip;
    v = lk_rule_of(exact ? ip : ip - 1);
    switch (LK_RULE_KIND(v)) {
    case LK_R_RSP: cfa = sp + (uintptr_t)(intptr_t)LK_RULE_CFA(v); break;
    case LK_R_RBP: cfa = bp + (uintptr_t)(intptr_t)LK_RULE_CFA(v); break;
    case LK_R_SIG: {
      const uintptr_t *g = (const uintptr_t *)(sp + LK_UC_GREGS);
      if (sp + LK_UC_GREGS + 8 * (LK_UC_RIP + 1) > hi) return n;
      bp = g[LK_UC_RBP];
      ip = g[LK_UC_RIP];
      if (g[LK_UC_RSP] < lo || g[LK_UC_RSP] >= hi || !ip) return n;
      sp = g[LK_UC_RSP];
      exact = 1;
      continue;
    }
    case LK_R_HARD: *hard = 1; return n;
    default: return n;   /* the end, or code without frame information */
    }
    if (cfa <= sp || cfa > hi || (cfa & 7) || cfa - 8 < lo) return n;
    rbp_off = LK_RULE_RBP(v);
    if (rbp_off) {
      if (cfa + (intptr_t)rbp_off < lo) return n;
      bp = *(const uintptr_t *)(cfa + (intptr_t)rbp_off);
    }
    ip = *(const uintptr_t *)(cfa - 8);
    sp = cfa;
    exact = 0;
    if (!ip) return n;
  }
  return n;
}

void lk_unw_init(void)
{
  lk_lock_register(&lk_uo_lock);
  lk_lock_register(&lk_uc_lock);
}

#else  /* another machine: libunwind only */

int lk_unw_trace(uintptr_t *out, int max, int *hard) { (void)out; (void)max; *hard = 1; return 0; }
void lk_unw_init(void) {}

#endif
