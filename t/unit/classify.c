/* Unit test of the classification (csrc/lk_classify.c) on synthetic blocks: a root holding A,
** A holding B, a dropped cycle C <-> D, E known only by an interior pointer, F holding G and lost,
** H held by the dynamic linker's own block, and lost Y holding X holding Z (X, before Y in the
** list, is filled from first). Valgrind's kinds must come out, and each indirect block's owner
** (the definite block that holds it, through others). Then 5000 blocks with gaps between them,
** found from roots by start, interior and gap addresses (the sampled search). And glibc's stale
** free-list links in a reused block's first word, told from real pointers there. TAP output. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "../../csrc/lk_classify.h"
#include "tap.h"

/* The blocks live in this array, 64 bytes apart; each is 64 bytes long. */
static uintptr_t heap[11][8] __attribute__((aligned(16)));
enum { A, B, C, D, E, F, G, H, X, Z, Y, N };

/* Many blocks: block k is 32 bytes at many[2k] (the 32 bytes after it are a gap). */
#define NMANY 5000
static uintptr_t many[2 * NMANY][4] __attribute__((aligned(16)));

static void many_blocks(void)
{
  static lk_block b[NMANY];
  static uint32_t work[2 * NMANY + 1];
  static uintptr_t roots[3 * NMANY];
  lk_scanner s;
  int k, nroots = 0, right = 1;
  for (k = 0; k < NMANY; k++) {
    b[k].addr = (uintptr_t)many[2 * k];
    b[k].size = 32;
    b[k].site = 2;
    b[k].state = LK_UNREACHED;
    if (k % 3 == 0) roots[nroots++] = b[k].addr;                    /* its start */
    else if (k % 3 == 1) roots[nroots++] = b[k].addr + 8 + k % 16;  /* its interior */
    roots[nroots++] = (uintptr_t)many[2 * k + 1] + k % 32;          /* the gap after it */
  }
  roots[nroots++] = b[NMANY - 1].addr + 32 + 4096;                   /* beyond the last */
  lk_classify_begin(&s, b, NMANY, work, 0, NULL, NULL);
  lk_classify_root(&s, (uintptr_t)roots, (uintptr_t)(roots + nroots));
  lk_classify_finish(&s);
  lk_classify_end(&s);
  for (k = 0; k < NMANY; k++)
    right &= b[k].state == (k % 3 == 0 ? LK_REACHABLE : k % 3 == 1 ? LK_POSSIBLE : LK_DEFINITE);
  ok(right, "5000 blocks: each found by its start or interior, none by a gap's address");
}

/* glibc's safe-linked free-list links left in a reused block's first word (tcache: the next
** entry; fastbin: the next chunk's header), and real pointers there. The holders sit at 64 KiB
** boundaries (their address >> 12 ends in four zero bits), so a pointer they hold first demangles
** to a 16-byte aligned address; a block mapped far below the others and one far above (as glibc's
** mmapped chunks are) make any such address fall between the lowest and the highest block. */
static uintptr_t linked[8][8192] __attribute__((aligned(65536)));
enum { P, K, Q1, R1, Q2, R2, Q3, R3, Q4, T, LOW, FAR, NL };

static void stale_links(void)
{
  lk_block b[NL], tmp;
  uint32_t work[2 * NL + 1];
  uintptr_t roots[5], at[NL], *low, *far, *other, q4;
  lk_scanner s;
  int i, j, pos[NL];
  low = mmap((void *)((uintptr_t)1 << 32), 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  far = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  other = mmap(NULL, 3 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (low == MAP_FAILED || far == MAP_FAILED || other == MAP_FAILED || (uintptr_t)low > (uintptr_t)linked ||
      (uintptr_t)far < (uintptr_t)linked) {
    ok(0, "pages mapped below and above the program's data");
    return;
  }
  q4 = ((uintptr_t)other + 65535) & ~(uintptr_t)65535;   /* Q4 and T in a mapping of their own */
  for (i = 0; i < NL; i++)
    at[i] = i == LOW ? (uintptr_t)low : i == FAR ? (uintptr_t)far : i == Q4 ? q4 : i == T ? q4 + 4096
          : (uintptr_t)linked[i];
  for (i = 0; i < NL; i++) memset((void *)at[i], 0, i == LOW || i == FAR ? 4096 : 48);
  for (i = 0; i < NL; i++) {   /* the blocks in address order; pos: where each one went */
    b[i].addr = at[i];
    b[i].size = i == LOW || i == FAR ? 4096 : 48;
    b[i].site = 2 + i;
    b[i].state = LK_UNREACHED;
  }
  for (i = 1; i < NL; i++)
    for (j = i; j > 0 && b[j - 1].addr > b[j].addr; j--) { tmp = b[j]; b[j] = b[j - 1]; b[j - 1] = tmp; }
  for (i = 0; i < NL; i++) pos[b[i].site - 2] = i;
#define W(k) (*(uintptr_t *)at[k])
#define STATE(k) (b[pos[k]].state)
  for (i = R1; i <= R3; i++) lk_table_set((void *)at[i], 48, 2);   /* the heap's MiB: recorded in */
  W(P) = at[K];                                  /* a real pointer, first word */
  W(Q1) = at[R1] ^ (at[Q1] >> 12);               /* a tcache link to R1 */
  W(Q2) = (at[R2] - 16) ^ (at[Q2] >> 12);        /* a fastbin link to R2's header */
  W(Q3) = (at[R3] + 16) ^ (at[Q3] >> 12);        /* a link into R3 (its chunk split since) */
  /* a link to a chunk still free, in a MiB where blocks were recorded, whose mangled value falls
  ** on the lost block T */
  lk_table_set((void *)((at[T] ^ (at[Q4] >> 12)) + 32), 48, 2);
  W(Q4) = at[T];
  roots[0] = at[P];
  roots[1] = at[Q1];
  roots[2] = at[Q2];
  roots[3] = at[Q3];
  roots[4] = at[Q4];
  lk_classify_begin(&s, b, NL, work, 0, NULL, NULL);
  lk_classify_root(&s, (uintptr_t)roots, (uintptr_t)(roots + 5));
  lk_classify_finish(&s);
  lk_classify_end(&s);
  ok(((at[K] ^ (at[P] >> 12)) & 15) == 0 && ((at[T] ^ (at[Q4] >> 12)) & 15) == 0,
     "the holders' first words demangle to 16-byte aligned addresses");
  ok(STATE(K) == LK_REACHABLE, "a real pointer in a block's first word holds what it points at");
  ok(STATE(R1) == LK_DEFINITE && STATE(R2) == LK_DEFINITE && STATE(R3) == LK_DEFINITE,
     "a stale tcache or fastbin link to a chunk of the heap (a block, its header, its inside) holds nothing");
  ok(STATE(T) == LK_DEFINITE, "a stale link to a chunk still free holds nothing, whatever its value falls on");
#undef W
#undef STATE
  munmap(low, 4096);
  munmap(far, 4096);
  munmap(other, 3 << 16);
}

int main(void)
{
  lk_block b[N];
  uint32_t work[2 * N + 1], owner[N];
  lk_why why[N];
  lk_scanner s;
  uintptr_t roots[3];
  int i;
  memset(heap, 0, sizeof(heap));
  for (i = 0; i < N; i++) {
    b[i].addr = (uintptr_t)heap[i];
    b[i].size = sizeof(heap[i]);
    b[i].site = 2 + i;
    b[i].state = LK_UNREACHED;
    why[i].at = 0;
    why[i].block = why[i].root = -1;
  }
  heap[A][3] = b[B].addr;          /* A -> B */
  heap[C][0] = b[D].addr;          /* C <-> D, nothing else holds them */
  heap[D][5] = b[C].addr;
  heap[F][1] = b[G].addr + 8;      /* F -> G (interior), F lost */
  heap[Y][2] = b[X].addr;          /* Y -> X -> Z, Y lost */
  heap[X][4] = b[Z].addr;
  roots[0] = b[A].addr;            /* a root holds A */
  roots[1] = b[E].addr + 16;       /* and the middle of E */
  roots[2] = 12345;                /* and a number that is no block */
  lk_classify_begin(&s, b, N, work, 0, NULL, why);
  s.owner = owner;
  s.root = 4;
  lk_classify_held(&s, H);
  s.root = 7;
  lk_classify_root(&s, (uintptr_t)roots, (uintptr_t)(roots + 3));
  lk_classify_finish(&s);
  lk_classify_end(&s);
  ok(b[A].state == LK_REACHABLE && b[B].state == LK_REACHABLE, "a root's block and what it holds: reachable");
  ok(b[E].state == LK_POSSIBLE, "a block known by an interior pointer only: possibly lost");
  ok((b[C].state == LK_DEFINITE) + (b[D].state == LK_DEFINITE) == 1 &&
     (b[C].state == LK_INDIRECT) + (b[D].state == LK_INDIRECT) == 1, "a dropped cycle: one definite, one indirect");
  ok(b[F].state == LK_DEFINITE && b[G].state == LK_INDIRECT, "a lost block's interior pointer: what it holds is indirect");
  ok(b[H].state == LK_REACHABLE, "a block the dynamic linker holds: reachable");
  ok(owner[G] == F, "owner: the lost block that holds an indirect one");
  ok(owner[b[C].state == LK_INDIRECT ? C : D] == (b[C].state == LK_INDIRECT ? D : C),
     "owner: in a cycle, the definite one");
  ok(b[Y].state == LK_DEFINITE && b[X].state == LK_INDIRECT && b[Z].state == LK_INDIRECT,
     "a lost chain filled from its middle first: its head definite, the rest indirect");
  ok(owner[X] == Y && owner[Z] == Y, "owner: the head of the chain, for the block filled from first too");
  ok(s.roots_bytes == sizeof(roots), "the root bytes read are counted");
  ok(why[A].root == 7 && why[A].at == (uintptr_t)&roots[0] && why[B].block == A &&
     why[B].at == (uintptr_t)&heap[A][3], "why: A held by the root's word, B by A's");
  ok(why[H].root == 4, "why: H held by its root");
  many_blocks();
  stale_links();
  return done();
}
