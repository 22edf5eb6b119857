/* Unit test of what a check reads while another thread is stopped anywhere: a check collects the
** live blocks (csrc/lk_table.c) and walks the program's anonymous mappings (csrc/lk_mmap.c) with
** every other thread parked, without their locks, and a parked thread may be half way through
** making a leaf of the table, growing its list of leaves, or changing the list of mappings in mmap
** or munmap. Here the writer is single-stepped (x86-64's trap flag) and the SIGTRAP handler reads
** after every one of its instructions (once for the repeats of a string one), as a check would at
** that point: it must neither crash nor see a block or a mapping lost, invented or out of order.
** x86-64 only. TAP output. */
#define _GNU_SOURCE 1  /* REG_EFL, REG_RIP */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "../../csrc/lk_mmap.h"
#include "../../csrc/lk_table.h"
#include "../../csrc/lk_sys.h"
#include "tap.h"

/* The tracker's own (lk_maps.c) gives the readable parts of a range, as /proc/self/maps says;
** here a range is given whole: what is tested is the list of mappings. */
void lk_maps_readable(uintptr_t lo, uintptr_t hi, lk_range_fn fn, void *ud)
{
  fn(lo, hi, ud);
}

/* -- Single steps ----------------------------------------------------------- */

static void (*volatile at_step)(void);  /* what the handler checks; NULL: stop stepping */
static greg_t last_ip;
static long steps, bad;

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
  ucontext_t *uc = ctx;
  (void)sig;
  (void)si;
  if (!at_step) {
    uc->uc_mcontext.gregs[REG_EFL] &= ~(greg_t)0x100;
    return;
  }
  if (uc->uc_mcontext.gregs[REG_RIP] == last_ip) return;
  last_ip = uc->uc_mcontext.gregs[REG_RIP];
  steps++;
  at_step();
}

static void step_begin(void (*check)(void))
{
  steps = bad = 0;
  last_ip = 0;
  at_step = check;
  __asm__ volatile("pushfq; orq $0x100, (%%rsp); popfq" ::: "memory", "cc");
}

static void step_end(void)
{
  at_step = NULL;
  __asm__ volatile("pushfq; andq $~0x100, (%%rsp); popfq" ::: "memory", "cc");
}

/* -- The table: one block per leaf, leaf K's at BASE + K MiB ---------------- */

#define BASE ((uintptr_t)0x7a0000000000)
#define MIB ((uintptr_t)1 << 20)

static size_t set_before;       /* blocks set before the stepped call */

static void *block_of(size_t k) { return (void *)(BASE + k * MIB + 0x40); }

static void set_leaf(size_t k)
{
  lk_table_set(block_of(k), 16 + k % 100, (uint32_t)(1 + k % 1000));
}

/* Every block set before is there, in order; the stepped one may be there already. */
static void check_table(void)
{
  lk_block *b;
  size_t n, want, i;
  n = lk_table_collect(&b, &want, 0);
  if (n < set_before || n > set_before + 1 || want != n) bad++;
  for (i = 0; b && i < n; i++)
    if (b[i].addr != (uintptr_t)block_of(i) || b[i].size != 16 + i % 100 || b[i].site != 1 + i % 1000) bad++;
  if (b) lk_sysunmap(b, n * sizeof(lk_block));
}

static void set_stepped(size_t k)
{
  set_before = k;
  step_begin(check_table);
  set_leaf(k);
  step_end();
}

/* -- The mappings: pages in a reserved region -------------------------------- */

#define PAGE ((uintptr_t)4096)
#define MAXR 2048
typedef struct { uintptr_t lo, hi; } range;
static range before[MAXR], after[MAXR], seen[MAXR];
static size_t nbefore, nafter, nseen;
static uintptr_t region;

static void seen_add(uintptr_t lo, uintptr_t hi, void *ud)
{
  (void)ud;
  if (nseen < MAXR) seen[nseen].lo = lo, seen[nseen].hi = hi;
  nseen++;
}

static int seen_is(const range *r, size_t n)
{
  return nseen == n && memcmp(seen, r, n * sizeof(range)) == 0;
}

/* The list walked is the one before the change or the one after, whole; a lookup finds the first
** and the last mapping. */
static void check_maps(void)
{
  nseen = 0;
  lk_maps_foreach_foreign(seen_add, NULL);
  if (!seen_is(before, nbefore) && !seen_is(after, nafter)) bad++;
  if (!lk_foreign_find_stopped(before[0].lo) || !lk_foreign_find_stopped(before[nbefore - 1].hi - 1)) bad++;
}

static void walk_now(range *into, size_t *n)
{
  nseen = 0;
  lk_maps_foreach_foreign(seen_add, NULL);
  memcpy(into, seen, nseen * sizeof(range));
  *n = nseen;
}

/* The list as it is now, and as it must be after the change: without [glo, ghi), then with
** [alo, ahi) unless empty. */
static void expect(uintptr_t glo, uintptr_t ghi, uintptr_t alo, uintptr_t ahi)
{
  size_t i;
  int add = alo < ahi;
  walk_now(before, &nbefore);
  nafter = 0;
  for (i = 0; i < nbefore; i++) {
    range r = before[i];
    if (add && alo < r.lo && (nafter == 0 || after[nafter - 1].hi <= alo)) {
      after[nafter].lo = alo, after[nafter++].hi = ahi;
      add = 0;
    }
    if (r.hi <= glo || r.lo >= ghi) { after[nafter++] = r; continue; }
    if (r.lo < glo) after[nafter].lo = r.lo, after[nafter++].hi = glo;
    if (r.hi > ghi) after[nafter].lo = ghi, after[nafter++].hi = r.hi;
  }
  if (add) after[nafter].lo = alo, after[nafter++].hi = ahi;
}

/* Page I of the region mapped (N pages), through the tracker's mmap. */
static void *map_page(size_t i, size_t n)
{
  return mmap((void *)(region + i * PAGE), n * PAGE, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

static int map_stepped(size_t i, size_t n)
{
  void *p;
  expect(region + i * PAGE, region + (i + n) * PAGE, region + i * PAGE, region + (i + n) * PAGE);
  step_begin(check_maps);
  p = map_page(i, n);
  step_end();
  walk_now(seen, &nseen);
  return p != MAP_FAILED && seen_is(after, nafter);
}

static int unmap_stepped(size_t i, size_t n)
{
  int r;
  expect(region + i * PAGE, region + (i + n) * PAGE, 0, 0);
  step_begin(check_maps);
  r = munmap((void *)(region + i * PAGE), n * PAGE);
  step_end();
  walk_now(seen, &nseen);
  return r == 0 && seen_is(after, nafter);
}

/* The mapping at page FROM (one page) moved to page TO by mremap. */
static int move_stepped(size_t from, size_t to)
{
  void *p;
  expect(region + from * PAGE, region + (from + 1) * PAGE, region + to * PAGE, region + (to + 1) * PAGE);
  step_begin(check_maps);
  p = mremap((void *)(region + from * PAGE), PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(region + to * PAGE));
  step_end();
  walk_now(seen, &nseen);
  return p != MAP_FAILED && seen_is(after, nafter);
}

int main(void)
{
  struct sigaction sa;
  size_t k;
  lk_block *b;
  size_t n, want;
  lk_table_init();
  lk_mmap_init();
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_trap;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGTRAP, &sa, NULL);

  set_stepped(0);
  printf("# %ld instructions stepped\n", steps);
  ok(bad == 0 && steps > 50, "the first leaf (its mid, the first list of leaves): every stop collects right");
  set_stepped(1);
  ok(bad == 0 && steps > 20, "a second leaf: every stop collects right");
  for (k = 2; k < 1024; k++) set_leaf(k);   /* the list of leaves full */
  set_stepped(1024);
  printf("# %ld instructions stepped\n", steps);
  ok(bad == 0 && steps > 50, "the leaf that grows the list of leaves: every stop collects right");
  set_stepped(1025);
  ok(bad == 0 && steps > 20, "a leaf after the growth: every stop collects right");
  n = lk_table_collect(&b, &want, 0);
  ok(n == 1026 && b[0].addr == BASE + 0x40 && b[1025].addr == BASE + 1025 * MIB + 0x40,
     "all 1026 blocks collected, in order, once nothing is stopped");
  if (b) lk_sysunmap(b, n * sizeof(lk_block));

  /* 1020 mappings of a page, every fourth page of a region reserved (not through the tracker),
  ** then mappings added in the middle until the lists grow, one split, one removed. */
  region = (uintptr_t)syscall(SYS_mmap, NULL, 8192 * PAGE, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  for (k = 0; k < 1020; k++) map_page(4 * k, 1);
  walk_now(seen, &nseen);
  ok(nseen == 1020 && seen[0].lo == region && seen[1019].lo == region + 4 * 1019 * PAGE,
     "1020 mappings listed, in order");
  {
    int all = 1;
    long most = 0;
    for (k = 0; k < 6; k++) {
      all &= map_stepped(4 * 500 + 2 + 4 * k, 1);
      all &= bad == 0 && steps > 1000;
      if (steps > most) most = steps;
    }
    printf("# %ld instructions stepped at most\n", most);
    ok(all, "six mappings added in the middle, the lists grown (1024 ranges): every stop sees the list "
       "before or after, whole");
  }
  map_page(4 * 1500, 3);
  ok(unmap_stepped(4 * 1500 + 1, 1) && bad == 0, "a page unmapped in the middle of a mapping (a split): "
     "every stop sees the list before or after, whole");
  ok(unmap_stepped(4 * 10, 1) && bad == 0, "a mapping unmapped: every stop sees the list before or after, whole");
  ok(move_stepped(4 * 20, 4 * 700 + 1) && bad == 0, "a mapping moved by mremap: every stop sees the list before "
     "or after (never without it), whole");
  return done();
}
