/* Unit test of the live-block table (csrc/lk_table.c) read while a writer is stopped anywhere: a
** check collects the blocks with every other thread parked, without the leaf lock, and a parked
** thread may be half way through making a leaf or growing the list of leaves. Here the writer is
** single-stepped (x86-64's trap flag) through lk_table_set calls that make leaves, and the SIGTRAP
** handler collects after every one of its instructions (once for the repeats of a string one), as a check would at that point: it must
** neither crash nor lose, invent or disorder a block. x86-64 only. TAP output. */
#define _GNU_SOURCE 1  /* REG_EFL */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include "../../csrc/lk_table.h"
#include "../../csrc/lk_sys.h"
#include "tap.h"

#define BASE ((uintptr_t)0x7a0000000000)
#define MIB ((uintptr_t)1 << 20)

static volatile int stepping;
static size_t set_before;       /* blocks set before the stepped call */
static uintptr_t stepped_addr;  /* the stepped call's block */
static long steps, bad;
static greg_t last_ip;          /* a string instruction (rep movsb) stops once per byte: one collection */

/* Leaf K's one block: at BASE + K MiB. */
static void *block_of(size_t k) { return (void *)(BASE + k * MIB + 0x40); }

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
  ucontext_t *uc = ctx;
  lk_block *b;
  size_t n, want, i;
  (void)sig;
  (void)si;
  if (!stepping) {
    uc->uc_mcontext.gregs[REG_EFL] &= ~(greg_t)0x100;
    return;
  }
  if (uc->uc_mcontext.gregs[REG_RIP] == last_ip) return;
  last_ip = uc->uc_mcontext.gregs[REG_RIP];
  steps++;
  n = lk_table_collect(&b, &want, 0);
  /* every block set before is there, in order; the stepped one may be there already */
  if (n < set_before || n > set_before + 1 || want != n) bad++;
  for (i = 0; b && i < n && i < set_before; i++)
    if (b[i].addr != (uintptr_t)block_of(i) || b[i].size != 16 + i % 100 || b[i].site != 1 + i % 1000) bad++;
  if (b && n == set_before + 1 && b[n - 1].addr != stepped_addr) bad++;
  if (b) lk_sysunmap(b, n * sizeof(lk_block));
}

static void set_leaf(size_t k)
{
  lk_table_set(block_of(k), 16 + k % 100, (uint32_t)(1 + k % 1000));
}

/* lk_table_set of leaf K's block, single-stepped. */
static void set_stepped(size_t k)
{
  set_before = k;
  stepped_addr = (uintptr_t)block_of(k);
  stepping = 1;
  __asm__ volatile("pushfq; orq $0x100, (%%rsp); popfq" ::: "memory", "cc");
  set_leaf(k);
  stepping = 0;
  __asm__ volatile("pushfq; andq $~0x100, (%%rsp); popfq" ::: "memory", "cc");
}

int main(void)
{
  struct sigaction sa;
  size_t k;
  lk_block *b;
  size_t n, want;
  lk_table_init();
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_trap;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGTRAP, &sa, NULL);

  set_stepped(0);
  ok(bad == 0 && steps > 50, "the first leaf (its mid, the first list of leaves): every stop collects right");
  printf("# %ld instructions stepped\n", steps);
  steps = 0;
  set_stepped(1);
  ok(bad == 0 && steps > 20, "a second leaf: every stop collects right");

  for (k = 2; k < 1024; k++) set_leaf(k);   /* the list of leaves full */
  steps = 0;
  set_stepped(1024);
  printf("# %ld instructions stepped\n", steps);
  ok(bad == 0 && steps > 50, "the leaf that grows the list of leaves: every stop collects right");
  steps = 0;
  set_stepped(1025);
  ok(bad == 0 && steps > 20, "a leaf after the growth: every stop collects right");

  n = lk_table_collect(&b, &want, 0);
  ok(n == 1026 && b[0].addr == BASE + 0x40 && b[1025].addr == BASE + 1025 * MIB + 0x40,
     "all 1026 blocks collected, in order, once nothing is stopped");
  if (b) lk_sysunmap(b, n * sizeof(lk_block));
  return done();
}
