/* A deliberately leaky C library for ljleak's tests: each function makes one kind of leak
** (or deliberately none), and is called from a Lua fixture through ffi.load. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Keep the compiler from proving blocks dead. */
static void *volatile sink;

void leak_malloc(size_t n)
{
  sink = malloc(n);
  sink = NULL;
}

void leak_strdup(const char *s)
{
  sink = strdup(s);
  sink = NULL;
}

void leak_calloc(size_t n, size_t sz)
{
  sink = calloc(n, sz);
  sink = NULL;
}

void leak_realloc_grown(void)
{
  char *p = malloc(16);
  p = realloc(p, 16);
  p = realloc(p, 4000);  /* grown: the block now lives at realloc's stack, 4000 bytes */
  sink = p;
  sink = NULL;
}

void leak_aligned(void)
{
  void *p = NULL;
  if (posix_memalign(&p, 64, 200) == 0) sink = p;
  sink = aligned_alloc(256, 512);
  sink = NULL;
}

void leak_big(void)
{
  sink = malloc(4 << 20);  /* above glibc's mmap threshold */
  sink = NULL;
}

/* -- Threads ------------------------------------------------------------ */

static void *leaky_thread_main(void *arg)
{
  size_t n = (size_t)(uintptr_t)arg;
  sink = malloc(n);
  sink = NULL;
  return NULL;
}

int leak_in_thread(size_t n)
{
  pthread_t t;
  if (pthread_create(&t, NULL, leaky_thread_main, (void *)(uintptr_t)n) != 0) return -1;
  return pthread_join(t, NULL);
}

/* Several threads allocating and freeing at once, each keeping every keep-th block: the
** tracker must count exactly nthreads * (per_thread / keep) blocks. */
struct stress { int per, keep; size_t size; };

static void *stress_main(void *arg)
{
  struct stress *st = arg;
  void *live[64];
  int i;
  for (i = 0; i < st->per; i++) {
    void *p = malloc(st->size + (size_t)(i % 7));
    live[i % 64] = p;
    if (i % st->keep != 0) free(p);
    else sink = NULL;  /* dropped */
  }
  (void)live;
  return NULL;
}

int leak_from_threads(int nthreads, int per, int keep, size_t size)
{
  pthread_t t[32];
  struct stress st = { per, keep, size };
  int i;
  if (nthreads > 32) nthreads = 32;
  for (i = 0; i < nthreads; i++)
    if (pthread_create(&t[i], NULL, stress_main, &st) != 0) return -1;
  for (i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
  return 0;
}

/* A thread that keeps allocating and freeing (holding 16 blocks at a time in its own array)
** until stopped: checks made meanwhile must stop it, scan it, and let it go on. */
static volatile int churn_stop;
static pthread_t churn_thread;

static void *churn_main(void *arg)
{
  void *held[16] = { 0 };
  unsigned long i = 0;
  (void)arg;
  while (!churn_stop) {
    free(held[i % 16]);
    held[i % 16] = malloc(16 + i % 200);
    i++;
  }
  for (i = 0; i < 16; i++) free(held[i]);
  return NULL;
}

int churn_start(void)
{
  churn_stop = 0;
  return pthread_create(&churn_thread, NULL, churn_main, NULL);
}

int churn_stop_and_join(void)
{
  churn_stop = 1;
  return pthread_join(churn_thread, NULL);
}

/* -- Reachability shapes -------------------------------------------------- */

static void *held_by_global;
static char *interior_only;

void hold_in_global(size_t n)
{
  held_by_global = malloc(n);  /* reachable: a library's cache is not a leak */
}

void leak_interior(size_t n)
{
  interior_only = (char *)malloc(n) + 8;  /* only an interior pointer survives: possible */
}

struct node { struct node *next; char pad[24]; };

void leak_chain(void)
{
  struct node *a = malloc(sizeof(*a)), *b = malloc(48);
  a->next = b;
  memset(b, 0, 48);
  sink = a;
  sink = NULL;  /* a: definite; b, held only by a: indirect */
}

void leak_cycle(void)
{
  struct node *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
  a->next = b;
  b->next = a;
  sink = a;
  sink = NULL;  /* a dropped two-block cycle: one definite, one indirect */
}

/* -- Processes -------------------------------------------------------------- */

int leak_in_child(size_t n)
{
  int st = 0;
  pid_t pid = fork();
  if (pid == 0) {
    sink = malloc(n);
    sink = NULL;
    exit(0);
  }
  if (pid < 0) return -1;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* -- Memory handed to Lua ------------------------------------------------- */

void *make_buffer(size_t n)
{
  return malloc(n);
}

void free_buffer(void *p)
{
  free(p);
}

/* N blocks of 48 bytes linked through their first word (a list's next, a tree node's key), the
** head held by a global, and a block above glibc's mmap threshold held too: all reachable. */
static struct node *first_word_head;
static void *first_word_big;

void hold_first_word_chain(int n)
{
  struct node *prev = NULL;
  int i;
  first_word_big = malloc((size_t)4 << 20);
  for (i = 0; i < n; i++) {
    struct node *b = malloc(sizeof(*b) + 16);
    memset(b, 0, sizeof(*b) + 16);
    if (prev) prev->next = b; else first_word_head = b;
    prev = b;
  }
}

/* Children that each start N threads, give each a block of 88 bytes as its argument (dropped by
** the starter), and exit at once: the threads, at the lowest priority on the starter's CPU alone,
** have not run yet when the exit check begins. The check must wait for them: what a thread was
** given is on its stack then, not lost. */
static void *started_late_main(void *arg)
{
  usleep(200000);
  free(arg);
  return NULL;
}

static __attribute__((noinline)) void *gift_for_thread(void)
{
  return malloc(88);
}

static void start_and_exit(int n)
{
  cpu_set_t one;
  pthread_attr_t a;
  struct sched_param sp = { 0 };
  int i;
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  sched_setaffinity(0, sizeof(one), &one);
  pthread_attr_init(&a);
  pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED);
  pthread_attr_setschedpolicy(&a, SCHED_IDLE);
  pthread_attr_setschedparam(&a, &sp);
  for (i = 0; i < n; i++) {
    pthread_t t;
    void *given = gift_for_thread();
    if (pthread_create(&t, &a, started_late_main, given)) free(given);
  }
  exit(0);
}

int exit_while_threads_start(int children, int n)
{
  int i, st;
  for (i = 0; i < children; i++) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) start_and_exit(n);
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
  }
  return 0;
}
