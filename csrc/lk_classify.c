/* ljleak tracker: classification of live blocks from their roots, with Valgrind's meanings
** (definite, indirect, possible, reachable). Model: LSan's lsan_common.cpp. */
#include "lk_classify.h"
#include "lk_sys.h"

#include <string.h>

/* -- Block lookup ------------------------------------------------------- */

/* The address of every LK_SAMPLE-th block, searched first: a search then reads a small array
** (n / 64 words) and one run of 64 blocks, not the whole list, whose lower levels miss the cache
** at every step (ten million blocks: 1.9 s for the exit scan, 200 ns a block). */
#define LK_SAMPLE 64

/* Index of the block holding address w, or -1; *start says whether w is its first byte. */
static long lk_find(const lk_scanner *s, uintptr_t w, int *start)
{
  size_t a = 0, z = s->n;
  const lk_block *b;
  long near;
  if (w < s->lo || w >= s->hi) return -1;
  if (s->indexed && (near = lk_table_nearest(w)) >= 0 && (size_t)near < s->n && s->b[near].addr <= w) {
    a = (size_t)near;   /* the last block with addr <= w, read from the table */
    z = a + 1;
  } else if (s->sample) {  /* the run of LK_SAMPLE blocks that holds the last block with addr <= w */
    size_t sa = 0, sz = s->nsample;
    while (sz - sa > 1) {
      size_t m = (sa + sz) / 2;
      if (s->sample[m] <= w) sa = m; else sz = m;
    }
    a = sa * LK_SAMPLE;
    z = a + LK_SAMPLE < s->n ? a + LK_SAMPLE : s->n;
  }
  while (z - a > 1) {  /* last block with addr <= w */
    size_t m = (a + z) / 2;
    if (s->b[m].addr <= w) a = m; else z = m;
  }
  b = &s->b[a];
  if (w == b->addr) { *start = 1; return (long)a; }
  if (w < b->addr || w >= b->addr + b->size) return -1;
  /* glibc's bins point at the header of the next free chunk, which overlaps this block's last
  ** word: that is the allocator's bookkeeping, not an interior pointer of the program. */
  if (s->usable && !s->safe && w == b->addr + s->usable((void *)b->addr) - 8) return -1;
  if (s->safe && w + 8 >= b->addr + b->size && ((w + 16) & 15) == 0) return -1;
  *start = 0;
  return (long)a;
}

/* -- Flood fill --------------------------------------------------------- */

static void lk_hit(lk_scanner *s, uintptr_t w, uintptr_t at)
{
  int start = 0;
  long i = lk_find(s, w, &start);
  lk_block *b;
  if (i < 0) return;
  b = &s->b[i];
  if (s->phase == 0) {
    uint32_t st = start ? LK_REACHABLE : LK_POSSIBLE;
    if (b->state >= st) return;
    b->state = st;
  } else {
    if (b->state != LK_UNREACHED || (uint32_t)i == s->leader) return;
    b->state = LK_INDIRECT;
    if (s->owner) s->owner[i] = s->leader;
  }
  if (s->why) {
    s->why[i].at = at;
    s->why[i].block = (int32_t)s->cur_block;
    s->why[i].root = s->cur_block < 0 ? s->root : -1;
  }
  s->work[s->nwork++] = (uint32_t)i;
}

/* glibc (2.32 on) keeps its tcache and fastbin links "safe-linked": (address of the link >> 12)
** XOR the next free chunk of the bin. When a block is handed out again its first word still holds
** that value: garbage that can fall on a live block. A first word is taken for such a stale link
** when it demangles to a 16-byte aligned address in a MiB of the heap where blocks were recorded
** (lk_table_covers): a chunk's address, free or handed out again since. A real pointer in a first
** word demangles to an address gigabytes from what it points at (its low 36 bits flipped by the
** word's own address >> 12, whose top bits are set), where no block was recorded but by a rare
** chance. (An earlier test, any 16-byte aligned address between the lowest and the highest block,
** took one real first-word pointer in 16 for a link whenever blocks were mmapped far above the
** heap, and what it held was called lost: a tree node's key, the first member of a struct.) */
static int lk_stale_link(const lk_scanner *s, uintptr_t at, uintptr_t w)
{
  uintptr_t d;
  if (s->cur_block < 0 || at != s->b[s->cur_block].addr) return 0;
  d = w ^ (at >> 12);
  return (d & 15) == 0 && lk_table_covers(d);   /* (a free chunk may lie above every live block) */
}

static void lk_scan_direct(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  const uintptr_t *p = (const uintptr_t *)((lo + 7) & ~(uintptr_t)7);
  const uintptr_t *e = (const uintptr_t *)(hi & ~(uintptr_t)7);
  uintptr_t blo = s->lo, bhi = s->hi;
  for (; p < e; p++) {
    uintptr_t w = *p;
    if (w >= blo && w < bhi && !lk_stale_link(s, (uintptr_t)p, w)) lk_hit(s, w, (uintptr_t)p);
  }
}

/* The same through a copy: memory another thread may unmap meanwhile is never touched directly. */
static uintptr_t lk_bounce[8192];

static void lk_scan_copied(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  lo = (lo + 7) & ~(uintptr_t)7;
  hi &= ~(uintptr_t)7;
  while (lo < hi) {
    size_t want = hi - lo > sizeof(lk_bounce) ? sizeof(lk_bounce) : hi - lo, got, k;
    got = lk_safe_copy(lk_bounce, lo, want) & ~(size_t)7;
    for (k = 0; k < got / 8; k++) {
      uintptr_t w = lk_bounce[k];
      if (w >= s->lo && w < s->hi && !lk_stale_link(s, lo + 8 * k, w)) lk_hit(s, w, lo + 8 * k);
    }
    if (got < want) lo = ((lo + got) | 4095) + 1;  /* a hole: go on after it */
    else lo += got;
  }
}

static void lk_scan_words(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  if (s->safe) lk_scan_copied(s, lo, hi);
  else lk_scan_direct(s, lo, hi);
}

/* -- Resident pages only ----------------------------------------------------
** A huge mapping the program never touched (a MAP_NORESERVE reservation) holds only zeros: read
** only the pages in use (lk_pages_in_use), never the rest. A region of LK_RESIDENT_MIN bytes or
** more is asked about (a mincore call), a smaller one read whole: a page read that was never
** written costs a page fault (the zero page mapped), about ten in every process when only
** regions of 1 MiB or more were asked about (libraries' .bss, small mappings). */

#define LK_BIG ((uintptr_t)1 << 20)       /* pages asked about at once */
#define LK_RESIDENT_MIN ((uintptr_t)16 << 10)

static void lk_scan_counted(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  s->roots_bytes += hi - lo;
  lk_scan_words(s, lo, hi);
}

static void lk_scan_resident(lk_scanner *s, uintptr_t lo, uintptr_t hi,
                             void (*scan)(lk_scanner *, uintptr_t, uintptr_t))
{
  unsigned char vec[LK_BIG / 4096];
  uintptr_t w;
  if (hi - lo < LK_RESIDENT_MIN) { scan(s, lo, hi); return; }
  for (w = lo & ~(uintptr_t)4095; w < hi; w += LK_BIG) {
    uintptr_t we = w + LK_BIG < hi ? w + LK_BIG : hi, run = 0, p;
    size_t np = (we - w + 4095) / 4096, k;
    if (!lk_pages_in_use(w, np, vec)) { scan(s, w > lo ? w : lo, we); continue; }
    for (k = 0; k <= np; k++) {
      int in = k < np && vec[k];
      p = w + k * 4096;
      if (in && !run) run = p;
      if (!in && run) {
        scan(s, run > lo ? run : lo, p < we ? p : we);
        run = 0;
      }
    }
  }
}

static void lk_drain(lk_scanner *s)
{
  long saved = s->cur_block;
  while (s->nwork) {
    uint32_t i = s->work[--s->nwork];
    const lk_block *b = &s->b[i];
    s->cur_block = (long)i;
    lk_scan_resident(s, b->addr, b->addr + b->size, lk_scan_words);
  }
  s->cur_block = saved;
}

/* -- Classification ------------------------------------------------------ */

void lk_classify_begin(lk_scanner *s, lk_block *b, size_t n, uint32_t *work, int safe, lk_usable_f usable,
                       lk_why *why)
{
  size_t i;
  memset(s, 0, sizeof(*s));
  s->b = b;
  s->n = n;
  s->work = work;
  s->safe = safe;
  s->usable = usable;
  s->why = why;
  s->cur_block = -1;
  if (!n) return;
  s->lo = b[0].addr;
  for (i = 0; i < n; i++)
    if (b[i].addr + b[i].size > s->hi) s->hi = b[i].addr + b[i].size;
  if (s->hi == s->lo) s->hi++;  /* all zero-sized */
  s->nsample = (n + LK_SAMPLE - 1) / LK_SAMPLE;
  s->sample = n > LK_SAMPLE ? lk_sysmap(s->nsample * sizeof(uintptr_t)) : NULL;
  for (i = 0; s->sample && i < s->nsample; i++) s->sample[i] = b[i * LK_SAMPLE].addr;
}

void lk_classify_end(lk_scanner *s)
{
  if (s->sample) lk_sysunmap(s->sample, s->nsample * sizeof(uintptr_t));
  s->sample = NULL;
}

void lk_classify_held(lk_scanner *s, size_t i)
{
  s->b[i].state = LK_REACHABLE;
  if (s->why) { s->why[i].at = s->b[i].addr; s->why[i].root = s->root; }
  s->work[s->nwork++] = (uint32_t)i;
  lk_drain(s);
}

void lk_classify_root(lk_scanner *s, uintptr_t lo, uintptr_t hi)
{
  s->cur_block = -1;
  lk_scan_resident(s, lo, hi, lk_scan_counted);  /* roots_bytes: what was read */
  lk_drain(s);
}

/* An indirect block's owner is the lost block whose flood fill reached it; a later one's fill may
** have made that one indirect in turn (it held it): follow each chain to the definite block at its
** end, shortening the chains on the way. */
static void lk_resolve_owners(lk_scanner *s)
{
  size_t i;
  for (i = 0; i < s->n; i++) {
    uint32_t end, j, next;
    if (s->b[i].state != LK_INDIRECT) continue;
    for (end = s->owner[i]; s->b[end].state == LK_INDIRECT; end = s->owner[end]) ;
    for (j = (uint32_t)i; s->b[j].state == LK_INDIRECT; j = next) {
      next = s->owner[j];
      s->owner[j] = end;
    }
  }
}

/* Lost blocks: the first of each group stays definite, what it holds becomes indirect. */
void lk_classify_finish(lk_scanner *s)
{
  size_t i;
  s->phase = 1;
  for (i = 0; i < s->n; i++) {
    if (s->b[i].state != LK_UNREACHED) continue;
    s->leader = (uint32_t)i;
    s->cur_block = (long)i;
    lk_scan_resident(s, s->b[i].addr, s->b[i].addr + s->b[i].size, lk_scan_words);
    lk_drain(s);
  }
  for (i = 0; i < s->n; i++)
    if (s->b[i].state == LK_UNREACHED) s->b[i].state = LK_DEFINITE;
  if (s->owner) lk_resolve_owners(s);
  /* A thread that ran on may have freed blocks meanwhile: those are not leaks. */
  if (s->safe) {
    for (i = 0; i < s->n; i++)
      if (s->b[i].state != LK_REACHABLE && !lk_table_still(&s->b[i])) s->b[i].state = LK_GONE;
  }
}
