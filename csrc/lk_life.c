/* ljleak tracker: the process's life as the tracker sees it. Start-up, the exit check (exit, _exit,
** quick_exit, return from main), fork, and the execs and spawns that leave the tracker behind. */
#include "lk_alloc.h"
#include "lk_api.h"
#include "lk_ctx.h"
#include "lk_lock.h"
#include "lk_luavm.h"
#include "lk_maps.h"
#include "lk_mmap.h"
#include "lk_report.h"
#include "lk_scan.h"
#include "lk_stack.h"
#include "lk_state.h"
#include "lk_sys.h"
#include "lk_table.h"
#include "lk_thread.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

extern int __cxa_atexit(void (*)(void *), void *, void *);
extern char **environ;

static char lk_self_path[512];

/* -- Capturing the caller ---------------------------------------------------
** exit(), _exit(), _Exit() and quick_exit() are entered through stubs that store their caller's
** stack pointer and callee-saved registers in this thread's lk_exit_regs before anything else
** runs: the check then scans this thread's stack from the caller's frame up, and those registers,
** never the frames of exit handling (the tracker's among them). */

LK_TLS lk_regs lk_exit_regs LK_HIDDEN;

LK_CAPTURING_ENTRY(exit, lk_exit_regs, lk_exit_body)
LK_CAPTURING_ENTRY(_exit, lk_exit_regs, lk__exit_body)
LK_CAPTURING_ENTRY(_Exit, lk_exit_regs, lk__exit_body)
LK_CAPTURING_ENTRY(quick_exit, lk_exit_regs, lk_quick_exit_body)

typedef void (*lk_exit_f)(int);
static lk_exit_f lk_real_exit, lk_real_quick_exit;

/* -- The exit check -----------------------------------------------------------
** Runs once, after everything else: registered with __cxa_atexit from the constructor (after main's
** atexit handlers, destructors, and lua_close in main), and with at_quick_exit. It runs on the
** tracker's own stack (the program's may be a small thread stack, nearly used up). */

static volatile int lk_checked;

static void lk_exit_scan(void *arg)
{
  lk_result r;
  lk_maps_snapshot();   /* before parking: a parked thread may hold the loader's lock */
  lk_maps_load();
  lk_set_on(LK_ON_GATE);  /* for good: the process ends */
  lk_threads_park();
  lk_scan(&r, arg);
  lk_report_write(&r);
}

static void lk_check_exit(uintptr_t fallback_sp)
{
  lk_scan_from from;
  if (__atomic_exchange_n(&lk_checked, 1, __ATOMIC_ACQ_REL) || !lk_on) return;
  lk_busy++;
  from.tid = (long)syscall(SYS_gettid);
  from.regs = NULL;
  from.c_only = 0;
  if (lk_exit_regs.sp) {               /* exit(), _exit(), quick_exit() */
    from.sp = lk_exit_regs.sp;
    from.regs = lk_exit_regs.r;
  } else if (lk_main_returned) {       /* main returned: its frame and those below are dead */
    from.sp = lk_main_sp;
  } else {                             /* the last thread's pthread_exit: exit handling only */
    from.sp = fallback_sp;
  }
  if (!lk_on_own_stack(lk_exit_scan, &from)) lk_exit_scan(&from);
}

static void lk_at_exit(void *unused)
{
  (void)unused;
  lk_check_exit((uintptr_t)__builtin_frame_address(0));
}

static void lk_at_quick_exit(void)
{
  lk_check_exit((uintptr_t)__builtin_frame_address(0));
}

LK_HIDDEN LK_USED void lk_exit_body(int status)
{
  lk_real_exit(status);
  __builtin_unreachable();
}

/* Programs that end with _exit (dash, forked children) are checked too, as Valgrind does; but
** not a vfork child, which shares its parent's memory: it did not run our fork handler. */
LK_HIDDEN LK_USED void lk__exit_body(int status)
{
  if (syscall(SYS_getpid) == lk_pid) lk_check_exit(lk_exit_regs.sp);
  syscall(SYS_exit_group, status);
  __builtin_unreachable();
}

LK_HIDDEN LK_USED void lk_quick_exit_body(int status)
{
  if (lk_real_quick_exit) lk_real_quick_exit(status);
  lk__exit_body(status);
}

/* -- fork ---------------------------------------------------------------------
** Every tracker lock is taken before the fork and released (parent) or reset (child) after it,
** so a child never inherits a lock another thread held. The parent marks its child live before
** going on: else it may exit, and `ljleak run` stop waiting, before the child got to run. */

typedef pid_t (*lk_fork_f)(void);
static lk_fork_f lk_real_fork;

LK_EXPORT pid_t fork(void)
{
  pid_t pid;
  if (!lk_real_fork) lk_real_fork = (lk_fork_f)dlsym(RTLD_NEXT, "fork");
  pid = lk_real_fork ? lk_real_fork() : -1;
  if (pid > 0) lk_report_mark_live(pid);
  return pid;
}

static void lk_fork_prepare(void)
{
  lk_stack_fork_prepare();
  lk_locks_take_all();
}

static void lk_fork_parent(void)
{
  lk_locks_release_all();
  lk_stack_fork_done(0);
}

static void lk_fork_child(void)
{
  lk_locks_reset_all();
  lk_stack_fork_done(1);
  lk_state_after_fork();
  lk_report_mark_live(lk_pid);
  lk_thread_after_fork();
}

/* -- exec and spawn -----------------------------------------------------------
** A process that execs a program the tracker cannot enter (its environment lost LD_PRELOAD or
** LJLEAK_DIR, a static or setuid binary) is never checked: say so in the run directory
** (proc.PID.exec, removed if the exec fails), and for posix_spawn's children (proc.PID.untraced). */

static const char *lk_env_get(char *const *envp, const char *name)
{
  size_t n = strlen(name);
  for (; envp && *envp; envp++)
    if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=') return *envp + n + 1;
  return NULL;
}

static int lk_preload_has_self(const char *list)
{
  size_t n = strlen(lk_self_path);
  const char *p = list;
  if (!list || !n) return 0;
  while ((p = strstr(p, lk_self_path))) {
    int start = p == list || p[-1] == ':' || p[-1] == ' ';
    int end = p[n] == 0 || p[n] == ':' || p[n] == ' ';
    if (start && end) return 1;
    p += n;
  }
  return 0;
}

/* Why the program at PATH cannot be traced once exec'd, or NULL. DEPTH: #! interpreters followed. */
static const char *lk_untraceable_file(const char *path, int depth)
{
  unsigned char h[4096];
  struct stat st;
  long n;
  int fd = (int)syscall(SYS_open, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;  /* exec will fail, or the file is not ours to judge */
  n = (long)syscall(SYS_read, fd, h, sizeof(h));
  if (syscall(SYS_fstat, fd, &st) != 0) st.st_mode = 0;
  syscall(SYS_close, fd);
  if (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) ||
      ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP) && st.st_gid != getegid()))
    return "is setuid or setgid: the dynamic loader ignores LD_PRELOAD for it";
  if (n >= 64 && h[0] == 0x7f && h[1] == 'E' && h[2] == 'L' && h[3] == 'F' && h[4] == 2) {
    uint64_t phoff;
    uint16_t phentsize, phnum, i;
    memcpy(&phoff, h + 32, 8);
    memcpy(&phentsize, h + 54, 2);
    memcpy(&phnum, h + 56, 2);
    for (i = 0; i < phnum; i++) {
      uint64_t off = phoff + (uint64_t)i * phentsize;
      uint32_t type;
      if (phentsize < 4 || off + 4 > (uint64_t)n) return NULL;  /* cannot tell: assume dynamic */
      memcpy(&type, h + off, 4);
      if (type == 3 /* PT_INTERP */) return NULL;
    }
    return "is statically linked: LD_PRELOAD cannot load the tracker into it";
  }
  if (n > 2 && h[0] == '#' && h[1] == '!' && depth < 2) {
    char interp[256];
    long i = 2, k = 0;
    while (i < n && (h[i] == ' ' || h[i] == '\t')) i++;
    while (i < n && k < 255 && h[i] != ' ' && h[i] != '\t' && h[i] != '\n') interp[k++] = (char)h[i++];
    interp[k] = 0;
    if (k) return lk_untraceable_file(interp, depth + 1);
  }
  return NULL;
}

/* FILE as execvp would find it on PATH (the current environment's), into buf; NULL if not found. */
static const char *lk_search_path(const char *file, char *buf, size_t size)
{
  const char *path = getenv("PATH"), *p;
  size_t fl = strlen(file);
  if (strchr(file, '/')) return file;
  if (!path) path = "/bin:/usr/bin";
  for (p = path; ; p++) {
    const char *e = strchr(p, ':');
    size_t dl = e ? (size_t)(e - p) : strlen(p);
    if (dl + fl + 2 <= size) {
      if (dl) { memcpy(buf, p, dl); buf[dl] = '/'; memcpy(buf + dl + 1, file, fl + 1); }
      else memcpy(buf, file, fl + 1);
      if (access(buf, X_OK) == 0) return buf;
    }
    if (!e) return NULL;
    p = e;
  }
}

/* Why a new program (FILE, searched on PATH when SEARCH) run with ENVP will not be checked. */
static const char *lk_untraceable(const char *file, char *const *envp, int search, const char **shown)
{
  static char found[4096];
  const char *path = search ? lk_search_path(file, found, sizeof(found)) : file;
  const char *why;
  *shown = path ? path : file;
  if (!path) return NULL;
  if (!envp) envp = environ;
  if (!lk_preload_has_self(lk_env_get(envp, "LD_PRELOAD")))
    return "runs with an environment without the tracker in LD_PRELOAD";
  if (!lk_env_get(envp, LK_ENV_DIR) || !*lk_env_get(envp, LK_ENV_DIR))
    return "runs with an environment without LJLEAK_DIR";
  if (strcmp(lk_env_get(envp, LK_ENV_DIR), lk_dir) != 0) return NULL;  /* another ljleak run's now */
  why = lk_untraceable_file(path, 0);
  return why;
}

static void lk_exec_note(pid_t pid, const char *suffix, const char *verb, const char *shown, const char *why)
{
  lk_report_note(pid, suffix, verb, shown, why);
}

static int lk_exec_prepare(const char *file, char *const *envp, int search)
{
  const char *shown, *why;
  if (!lk_on || !lk_dir) return 0;
  why = lk_untraceable(file, envp, search, &shown);
  if (!why) return 0;
  lk_exec_note((pid_t)syscall(SYS_getpid), ".exec", "exec'd ", shown, why);
  return 1;
}

static void lk_exec_failed(int noted)
{
  if (noted) lk_report_note_remove((pid_t)syscall(SYS_getpid), ".exec");
}

typedef int (*lk_execve_f)(const char *, char *const[], char *const[]);
static lk_execve_f lk_real_execve, lk_real_execvpe;

LK_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
  int noted = lk_exec_prepare(path, envp, 0), r;
  if (!lk_real_execve) lk_real_execve = (lk_execve_f)dlsym(RTLD_NEXT, "execve");
  r = lk_real_execve(path, argv, envp);
  lk_exec_failed(noted);
  return r;
}

LK_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
  int noted = lk_exec_prepare(file, envp, 1), r;
  if (!lk_real_execvpe) lk_real_execvpe = (lk_execve_f)dlsym(RTLD_NEXT, "execvpe");
  r = lk_real_execvpe(file, argv, envp);
  lk_exec_failed(noted);
  return r;
}

LK_EXPORT int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }
LK_EXPORT int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

/* execl, execle, execlp: the argument list into an array (as glibc does, on the stack). */
#define LK_VA_ARGV(first, argv, envp_out)                                   \
  va_list ap;                                                               \
  size_t argc = 1, k;                                                       \
  va_start(ap, first);                                                      \
  while (va_arg(ap, const char *)) argc++;                                  \
  va_end(ap);                                                               \
  const char *argv[argc + 1];                                               \
  argv[0] = first;                                                          \
  va_start(ap, first);                                                      \
  for (k = 1; k <= argc; k++) argv[k] = va_arg(ap, const char *);           \
  envp_out;                                                                 \
  va_end(ap)

LK_EXPORT int execl(const char *path, const char *arg, ...)
{
  LK_VA_ARGV(arg, argv, (void)0);
  return execve(path, (char *const *)argv, environ);
}

LK_EXPORT int execlp(const char *file, const char *arg, ...)
{
  LK_VA_ARGV(arg, argv, (void)0);
  return execvpe(file, (char *const *)argv, environ);
}

LK_EXPORT int execle(const char *path, const char *arg, ...)
{
  char *const *envp;
  LK_VA_ARGV(arg, argv, envp = va_arg(ap, char *const *));
  return execve(path, (char *const *)argv, envp);
}

typedef int (*lk_spawn_f)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                          const posix_spawnattr_t *, char *const[], char *const[]);
static lk_spawn_f lk_real_spawn, lk_real_spawnp;

static int lk_spawn(lk_spawn_f real, int search, pid_t *pid, const char *file,
                    const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *at,
                    char *const argv[], char *const envp[])
{
  const char *shown = file, *why = lk_on && lk_dir ? lk_untraceable(file, envp, search, &shown) : NULL;
  pid_t child = 0;
  int r = real ? real(&child, file, fa, at, argv, envp) : -1;
  if (r == 0 && why) lk_exec_note(child, ".untraced", "was spawned to run ", shown, why);
  if (pid) *pid = child;
  return r;
}

LK_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
  if (!lk_real_spawn) lk_real_spawn = (lk_spawn_f)dlsym(RTLD_NEXT, "posix_spawn");
  return lk_spawn(lk_real_spawn, 0, pid, path, fa, at, argv, envp);
}

LK_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
  if (!lk_real_spawnp) lk_real_spawnp = (lk_spawn_f)dlsym(RTLD_NEXT, "posix_spawnp");
  return lk_spawn(lk_real_spawnp, 1, pid, file, fa, at, argv, envp);
}

/* -- Start-up -------------------------------------------------------------------- */

static int lk_self_cb(struct dl_phdr_info *info, size_t sz, void *ud)
{
  int i;
  (void)sz;
  (void)ud;
  for (i = 0; i < info->dlpi_phnum; i++) {
    uintptr_t lo = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
    uintptr_t me = (uintptr_t)&lk_self_cb;
    if (info->dlpi_phdr[i].p_type == PT_LOAD && me >= lo && me < lo + info->dlpi_phdr[i].p_memsz &&
        info->dlpi_name && strlen(info->dlpi_name) < sizeof(lk_self_path)) {
      strcpy(lk_self_path, info->dlpi_name);
      return 1;
    }
  }
  return 0;
}

__attribute__((constructor(101))) static void lk_init(void)
{
  lk_busy++;
  lk_state_init();
  lk_real_exit = (lk_exit_f)dlsym(RTLD_NEXT, "exit");
  lk_real_quick_exit = (lk_exit_f)dlsym(RTLD_NEXT, "quick_exit");
  lk_real_fork = (lk_fork_f)dlsym(RTLD_NEXT, "fork");
  lk_real_execve = (lk_execve_f)dlsym(RTLD_NEXT, "execve");
  lk_real_execvpe = (lk_execve_f)dlsym(RTLD_NEXT, "execvpe");
  dl_iterate_phdr(lk_self_cb, NULL);
  lk_alloc_init();
  lk_maps_init();       /* registers the outermost lock (dlclose's) first */
  lk_mmap_init();
  lk_table_init();
  lk_stack_init();
  lk_thread_init();
  lk_scan_init();
  lk_luavm_init();
  lk_api_init();
  lk_ctx_init();
  lk_own_stack_init();
  pthread_atfork(lk_fork_prepare, lk_fork_parent, lk_fork_child);
  __cxa_atexit(lk_at_exit, NULL, NULL);
  at_quick_exit(lk_at_quick_exit);
  lk_report_mark_live(lk_pid);
  lk_busy--;
  lk_set_on(LK_ON_RECORD);
}
