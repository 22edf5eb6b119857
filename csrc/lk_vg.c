/* ljleak: preloaded under --engine=valgrind. A unique XML file per process, client requests for Lua
** code (markers in Valgrind's output, leak checks between busted tests), dlclose kept a no-op. */
#include <dlfcn.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>

#include "ljleak.h"
#include "lk_def.h"
#include "lk_ljalloc.h"


extern char **environ;

/* -- The XML file's name -------------------------------------------------------------------- */
/* ljleak names each process's XML file vg.PID.ID.xml (--xml-file=DIR/vg.%p.%q{LJLEAK_VG_ID}.xml):
** the pid alone is not unique (every PID namespace has its pid 1). Valgrind reads the ID from the
** environment when a process starts and, in a forked child, again from the memory the child got
** from its parent. So before each fork the ID is rewritten in place (same length: no allocation)
** with a new one, which the child keeps and the parent gives back; an exec keeps it (the process
** keeps its pid and its file). Valgrind refuses to start a process whose environment lacks the
** variable, so the exec functions put it back into an environment that lost it (env -i). */

#define LK_ID_VAR LK_ENV_VG_ID "="
#define LK_ID_PREFIX (sizeof(LK_ID_VAR) - 1)
#define LK_ID_LEN 16

/* "LJLEAK_VG_ID=<this process's ID>", or "" when the process was started without one. */
static char lk_id_entry[LK_ID_PREFIX + LK_ID_LEN + 1];
static char lk_id_saved[LK_ID_LEN];
static int lk_id_changed;

/* The ID's characters in the environment, or NULL. */
static char *lk_id_slot(void)
{
  for (char **e = environ; e && *e; e++) {
    if (!strncmp(*e, LK_ID_VAR, LK_ID_PREFIX)) {
      char *v = *e + LK_ID_PREFIX;
      return strlen(v) == LK_ID_LEN ? v : NULL;
    }
  }
  return NULL;
}

static void lk_id_new(char *out)
{
  static uint64_t count;
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
    r = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (++count << 48);
  for (int i = 0; i < LK_ID_LEN; i++) out[i] = "0123456789abcdef"[(r >> (4 * i)) & 15];
}

static void lk_fork_prepare(void)
{
  char *v = lk_id_slot();
  lk_id_changed = v != NULL;
  if (!v) return;
  memcpy(lk_id_saved, v, LK_ID_LEN);
  lk_id_new(v);
  memcpy(lk_id_entry + LK_ID_PREFIX, v, LK_ID_LEN);
}

static void lk_fork_parent(void)
{
  char *v = lk_id_slot();
  if (!lk_id_changed || !v) return;
  memcpy(v, lk_id_saved, LK_ID_LEN);
  memcpy(lk_id_entry + LK_ID_PREFIX, v, LK_ID_LEN);
}

__attribute__((constructor)) static void lk_vg_init(void)
{
  char *v = lk_id_slot();
  if (!v || !RUNNING_ON_VALGRIND) return;
  memcpy(lk_id_entry, LK_ID_VAR, LK_ID_PREFIX);
  memcpy(lk_id_entry + LK_ID_PREFIX, v, LK_ID_LEN);
  pthread_atfork(lk_fork_prepare, lk_fork_parent, NULL);
}

/* ENVP, or in BUF (room for N + 2 entries) a copy of it with the ID put back, if it lacks it. */
static char *const *lk_env_fixed(char *const *envp, size_t n, char **buf)
{
  if (n == (size_t)-1) return envp;
  for (size_t i = 0; i < n; i++) buf[i] = envp[i];
  buf[n] = lk_id_entry;
  buf[n + 1] = NULL;
  return buf;
}

/* The number of entries in ENVP if the ID must be put back, else (size_t)-1. */
static size_t lk_env_needs_id(char *const *envp)
{
  size_t n = 0;
  if (!lk_id_entry[0]) return (size_t)-1;
  for (; envp && envp[n]; n++)
    if (!strncmp(envp[n], LK_ID_VAR, LK_ID_PREFIX)) return (size_t)-1;
  return n;
}

/* char *const *OUT: ENVP with the ID. */
#define LK_WITH_ID(out, envp) \
  size_t out##_n = lk_env_needs_id(envp); \
  char *out##_buf[out##_n == (size_t)-1 ? 1 : out##_n + 2]; \
  char *const *out = lk_env_fixed((envp), out##_n, out##_buf)

#define LK_REAL(type, name) static type real; if (!real) real = (type)dlsym(RTLD_NEXT, name)

typedef int (*lk_execve_fn)(const char *, char *const[], char *const[]);
typedef int (*lk_fexecve_fn)(int, char *const[], char *const[]);
typedef int (*lk_spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                           const posix_spawnattr_t *, char *const[], char *const[]);

LK_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
  LK_REAL(lk_execve_fn, "execve");
  LK_WITH_ID(env, envp);
  return real(path, argv, env);
}

LK_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
  LK_REAL(lk_execve_fn, "execvpe");
  LK_WITH_ID(env, envp);
  return real(file, argv, env);
}

LK_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
  LK_REAL(lk_fexecve_fn, "fexecve");
  LK_WITH_ID(env, envp);
  return real(fd, argv, env);
}

LK_EXPORT int execv(const char *path, char *const argv[])
{
  return execve(path, argv, environ);
}

LK_EXPORT int execvp(const char *file, char *const argv[])
{
  return execvpe(file, argv, environ);
}

/* The arguments of execl, execlp and execle, from ARG to the NULL, as an argv (in ARGV, room for
** N + 1); N counts them first. */
#define LK_VA_ARGV(argv, arg, last, more) \
  size_t argv##_n = 1; \
  va_list argv##_ap; \
  va_start(argv##_ap, last); \
  while (va_arg(argv##_ap, char *)) argv##_n++; \
  va_end(argv##_ap); \
  char *argv[argv##_n + 1]; \
  argv[0] = (char *)(arg); \
  va_start(argv##_ap, last); \
  for (size_t i = 1; i <= argv##_n; i++) argv[i] = va_arg(argv##_ap, char *); \
  more; \
  va_end(argv##_ap)

LK_EXPORT int execl(const char *path, const char *arg, ...)
{
  LK_VA_ARGV(argv, arg, arg, (void)0);
  return execve(path, argv, environ);
}

LK_EXPORT int execlp(const char *file, const char *arg, ...)
{
  LK_VA_ARGV(argv, arg, arg, (void)0);
  return execvpe(file, argv, environ);
}

LK_EXPORT int execle(const char *path, const char *arg, ...)
{
  char *const *envp;
  LK_VA_ARGV(argv, arg, arg, envp = va_arg(argv_ap, char *const *));
  return execve(path, argv, envp);
}

LK_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
  LK_REAL(lk_spawn_fn, "posix_spawn");
  LK_WITH_ID(env, envp);
  return real(pid, path, fa, attr, argv, env);
}

LK_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
  LK_REAL(lk_spawn_fn, "posix_spawnp");
  LK_WITH_ID(env, envp);
  return real(pid, file, fa, attr, argv, env);
}

/* -- Client requests ------------------------------------------------------------------------ */

/* Modules stay loaded: a library's globals stay roots for memcheck's leak check at exit (else a
** cache held by an ffi.load library's global shows as definitely lost) and its frames stay
** named. Their destructors run at exit, before the check. */
LK_EXPORT int dlclose(void *handle)
{
  (void)handle;
  return 0;
}

/* Non-zero when the program runs under Valgrind. */
LK_EXPORT int ljleak_vg_running(void)
{
  return (int)RUNNING_ON_VALGRIND;
}

/* A line in Valgrind's output (a <clientmsg> in its XML). */
LK_EXPORT void ljleak_vg_mark(const char *text)
{
  VALGRIND_PRINTF("%s\n", text);
}

static void lk_vg_chunk(uintptr_t lo, uintptr_t hi, int inuse, void *ud)
{
  int hide = *(int *)ud;
  if (inuse || hi <= lo) return;
  if (hide) VALGRIND_MAKE_MEM_NOACCESS(lo, hi - lo);
  else VALGRIND_MAKE_MEM_DEFINED(lo, hi - lo);
}

/* A leak check of what was lost since the last one (memcheck reports it as usual), with the free
** chunks of LuaJIT's heap hidden from it meanwhile: its scan skips memory that is not addressable,
** so a pointer left in a freed Lua object is no root, as in the tracker. ms: the Lua state's
** allocator (lua_getallocf), or NULL. out[0..3]: bytes definite, possible, reachable, suppressed
** in this check. All in one call: Lua code between hiding and showing would allocate there. */
LK_EXPORT int ljleak_vg_leak_check(void *ms, unsigned long *out)
{
  unsigned long d = 0, p = 0, r = 0, s = 0;
  int hide = 1, hidden = ms && lk_ljalloc_valid(ms);
  if (hidden) lk_ljalloc_walk(ms, lk_vg_chunk, &hide);
  VALGRIND_DO_ADDED_LEAK_CHECK;
  VALGRIND_COUNT_LEAKS(d, p, r, s);
  if (hidden) {
    hide = 0;
    lk_ljalloc_walk(ms, lk_vg_chunk, &hide);
  }
  out[0] = d;
  out[1] = p;
  out[2] = r;
  out[3] = s;
  return hidden;
}
