/* ljleak tracker: the tracker's own resources. Memory it never tracks, arenas that grow on demand,
** its own stack, reads that cannot fault, and its own fds (libunwind's pipe kept out of the way). */
#include "lk_sys.h"
#include "lk_state.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* -- Internal memory ---------------------------------------------------- */

volatile uint64_t lk_nomem;  /* allocations not recorded: the tracker could not get memory */

void *lk_sysmap(size_t len)
{
  void *p = (void *)syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void lk_sysunmap(void *p, size_t len)
{
  if (p) syscall(SYS_munmap, p, len);
}

/* -- Pages that hold data -----------------------------------------------------
** A page of an anonymous mapping that was never written holds only zeros and costs no memory
** until read. The pages in use are those in memory (mincore), or in swap (pagemap tells). */

static int lk_pagemap_fd = -2;

static int lk_page_swapped(uintptr_t page)
{
  uint64_t e = 0;
  if (lk_pagemap_fd == -2) {
    struct sysinfo si;
    lk_pagemap_fd = -1;
    if (sysinfo(&si) == 0 && si.totalswap > 0)
      lk_pagemap_fd = (int)syscall(SYS_open, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  }
  if (lk_pagemap_fd < 0) return 0;
  if (syscall(SYS_pread64, lk_pagemap_fd, &e, 8, (page >> 12) * 8) != 8) return 1;  /* unknown: read it */
  return (e >> 62) & 1;
}

int lk_pages_in_use(uintptr_t lo, size_t n, unsigned char *vec)
{
  size_t k;
  if (syscall(SYS_mincore, lo, n * 4096, vec) != 0) return 0;
  for (k = 0; k < n; k++) vec[k] = (vec[k] & 1) || lk_page_swapped(lo + k * 4096);
  return 1;
}

/* -- Growing arenas --------------------------------------------------------
** Pieces get stable ids (offset / 8 in a virtual space of 1 MiB chunks); a chunk is mapped when
** the first piece lands in it, so nothing is reserved before it is needed. Allocation is under
** the owner's lock; lookups are lock-free (a chunk is published before any id that points in). */

void *lk_arena_alloc(lk_arena *a, size_t n, uint32_t *id)
{
  size_t off, ci;
  n = (n + 7) & ~(size_t)7;
  if (a->used < 8) a->used = 8;  /* id 0 means "none" */
  if (n > LK_CHUNK_SIZE) return NULL;
  off = a->used;
  if ((off & (LK_CHUNK_SIZE - 1)) + n > LK_CHUNK_SIZE) off = (off | (LK_CHUNK_SIZE - 1)) + 1;
  ci = off >> LK_CHUNK_BITS;
  if (ci >= LK_ARENA_CHUNKS || (a->max && off + n > a->max)) { a->full++; return NULL; }
  if (!a->chunk[ci]) {
    char *c = lk_sysmap(LK_CHUNK_SIZE);
    if (!c) { a->full++; return NULL; }
    __atomic_store_n(&a->chunk[ci], c, __ATOMIC_RELEASE);
  }
  a->used = off + n;
  *id = (uint32_t)(off >> 3);
  return a->chunk[ci] + (off & (LK_CHUNK_SIZE - 1));
}

/* -- The tracker's own stack ----------------------------------------------
** Checks run on it: the program's stack may be small (a thread's 16 KiB, deep recursion), and the
** scanner's own variables (which hold block addresses) must never be on a stack it scans. */

#define LK_STACK_SIZE ((size_t)512 << 10)
static char *lk_stack_base;

int lk_own_stack_init(void)
{
  if (lk_stack_base) return 1;
  lk_stack_base = lk_sysmap(LK_STACK_SIZE + 4096);
  if (!lk_stack_base) return 0;
  syscall(SYS_mprotect, lk_stack_base, 4096, PROT_NONE);  /* guard page */
  return 1;
}

int lk_on_own_stack(void (*fn)(void *), void *arg)
{
  uintptr_t top;
  if (!lk_own_stack_init()) return 0;
  top = ((uintptr_t)lk_stack_base + 4096 + LK_STACK_SIZE) & ~(uintptr_t)15;
  __asm__ volatile(
    "mov %%rsp, %%rbx\n\t"
    "mov %0, %%rsp\n\t"
    "call *%1\n\t"
    "mov %%rbx, %%rsp\n\t"
    : "+r"(top), "+r"(fn), "+D"(arg)
    :
    : "rbx", "rax", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "memory", "cc",
      "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
      "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  return 1;
}

/* -- Reads that cannot fault ----------------------------------------------
** While another thread runs (it could not be stopped), memory may be unmapped under the scan:
** copy it through the kernel, which fails cleanly where the memory is gone. */

static int lk_vm_readv_ok = 1;

size_t lk_safe_copy(void *dst, uintptr_t src, size_t n)
{
  struct iovec l = { dst, n }, r = { (void *)src, n };
  ssize_t got;
  if (!lk_vm_readv_ok) return 0;
  got = syscall(SYS_process_vm_readv, syscall(SYS_getpid), &l, 1UL, &r, 1UL, 0UL);
  if (got < 0) {
    if (errno == ENOSYS || errno == EPERM) lk_vm_readv_ok = 0;
    return 0;
  }
  return (size_t)got;
}

int lk_safe_copy_available(void) { return lk_vm_readv_ok; }

/* -- The tracker's own file descriptors ------------------------------------
** Kept above the program's range (descriptors are handed out lowest first) and close-on-exec, so
** a program that reuses low numbers never meets them and an exec never inherits them. */

#define LK_MAXFDS 8
static volatile int lk_fds[LK_MAXFDS] = { -1, -1, -1, -1, -1, -1, -1, -1 };

int lk_fd_move_high(int fd)
{
  struct rlimit rl;
  long lo = 1024;
  int nfd, i;
  if (fd < 0) return fd;
  if (syscall(SYS_getrlimit, RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    lo = (long)rl.rlim_cur;
  if (lo > 4096) lo = 4096;  /* the kernel sizes the fd table to the highest number in use */
  lo -= 64;
  if (lo < 64) lo = 64;
  nfd = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, lo);
  if (nfd < 0) return fd;
  syscall(SYS_close, fd);
  for (i = 0; i < LK_MAXFDS; i++) {
    if (lk_fds[i] < 0) { lk_fds[i] = nfd; break; }
  }
  return nfd;
}

static int lk_fd_is_own(int fd)
{
  int i;
  for (i = 0; i < LK_MAXFDS; i++)
    if (lk_fds[i] == fd) return 1;
  return 0;
}

static void lk_fd_forget(int fd)
{
  int i;
  for (i = 0; i < LK_MAXFDS; i++)
    if (lk_fds[i] == fd) lk_fds[i] = -1;
}

/* libunwind validates addresses by writing them into a pipe it opens itself (pipe2, at its first
** use) and reopens it (closing the old numbers) when a read fails. Its pipe is moved above the
** program's range; and a close from inside the tracker of a number that is not the tracker's (the
** program closed libunwind's pipe and reused the number) is not passed on. */
typedef int (*lk_close_f)(int);
static lk_close_f lk_real_close;

LK_EXPORT int pipe2(int fds[2], int flags)
{
  int r = (int)syscall(SYS_pipe2, fds, flags);
  if (r == 0 && UNLIKELY(lk_busy > lk_paused)) {
    fds[0] = lk_fd_move_high(fds[0]);
    fds[1] = lk_fd_move_high(fds[1]);
  }
  return r;
}

LK_EXPORT int close(int fd)
{
  if (UNLIKELY(lk_busy > lk_paused)) {
    if (!lk_fd_is_own(fd)) return 0;
    lk_fd_forget(fd);
  }
  if (UNLIKELY(!lk_real_close)) lk_real_close = (lk_close_f)dlsym(RTLD_NEXT, "close");
  return lk_real_close(fd);
}
