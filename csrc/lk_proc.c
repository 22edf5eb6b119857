/* lk_proc.c: running the command for the CLI (ljleak.core): spawn with an environment of its own,
** and a wait that also returns on the signals ljleak forwards (INT, TERM, QUIT, HUP) and on a timeout. */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "lk_proc.h"

extern char **environ;

/* -- Signals ----------------------------------------------------------------
** From the first spawn on, the CLI keeps these blocked and takes them with sigtimedwait: nothing
** runs asynchronously, and none is lost while the CLI works. The child gets the old mask back. */

static sigset_t lk_watched, lk_old_mask;
static int lk_blocked;

static void lk_block_signals(void)
{
  if (lk_blocked) return;
  sigemptyset(&lk_watched);
  sigaddset(&lk_watched, SIGINT);
  sigaddset(&lk_watched, SIGTERM);
  sigaddset(&lk_watched, SIGQUIT);
  sigaddset(&lk_watched, SIGHUP);
  sigaddset(&lk_watched, SIGCHLD);
  sigprocmask(SIG_BLOCK, &lk_watched, &lk_old_mask);
  lk_blocked = 1;
}

/* -- spawn ------------------------------------------------------------------ */

/* A NULL-terminated array of the strings of the table at idx (1..n), on the Lua stack's memory. */
static const char **lk_strings(lua_State *L, int idx, int *n)
{
  int i, len = (int)lua_objlen(L, idx);
  const char **v = (const char **)lua_newuserdata(L, (size_t)(len + 1) * sizeof(char *));
  for (i = 1; i <= len; i++) {
    lua_rawgeti(L, idx, i);
    v[i - 1] = lua_tostring(L, -1);
    if (!v[i - 1]) luaL_error(L, "argument %d is not a string", i);
    lua_pop(L, 1);  /* the string stays alive: the table holds it */
  }
  v[len] = NULL;
  if (n) *n = len;
  return v;
}

/* The environment: environ, with each NAME of the table at idx set to its string value, or
** removed when the value is false. The strings made here are kept in a table left on the stack. */
static const char **lk_environ(lua_State *L, int idx)
{
  int n = 0, extra = 0, i, k = 0, keep;
  const char **v;
  for (i = 0; environ && environ[i]; i++) n++;
  lua_pushnil(L);
  while (lua_next(L, idx)) { extra++; lua_pop(L, 1); }
  lua_newtable(L);
  keep = lua_gettop(L);
  v = (const char **)lua_newuserdata(L, (size_t)(n + extra + 1) * sizeof(char *));
  for (i = 0; i < n; i++) {
    const char *eq = strchr(environ[i], '=');
    if (eq) {
      lua_pushlstring(L, environ[i], (size_t)(eq - environ[i]));
      lua_rawget(L, idx);
      if (!lua_isnil(L, -1)) { lua_pop(L, 1); continue; }  /* replaced or removed */
      lua_pop(L, 1);
    }
    v[k++] = environ[i];
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
      lua_pushvalue(L, -2);
      lua_pushliteral(L, "=");
      lua_pushvalue(L, -3);
      lua_concat(L, 3);
      v[k++] = lua_tostring(L, -1);
      lua_rawseti(L, keep, k);
    }
    lua_pop(L, 1);
  }
  v[k] = NULL;
  return v;
}

/* core.spawn(path, argv, env) -> pid | nil, message
** Runs PATH with ARGV (argv[1] is the program's name) and environ changed by ENV. A file exec
** rejects as not a binary (ENOEXEC) runs under /bin/sh, as execvp does. The child never runs Lua. */
static int proc_spawn(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  const char **argv, **envp;
  int p[2], err = 0, n;
  pid_t pid;
  ssize_t got;
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  argv = lk_strings(L, 2, &n);
  if (n < 1) return luaL_argerror(L, 2, "empty argv");
  envp = lk_environ(L, 3);
  if (pipe2(p, O_CLOEXEC) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "pipe: %s", strerror(errno));
    return 2;
  }
  lk_block_signals();
  pid = fork();
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &lk_old_mask, NULL);
    execve(path, (char *const *)argv, (char *const *)envp);
    if (errno == ENOEXEC) {
      const char **sh = alloca((size_t)(n + 2) * sizeof(char *));
      int i;
      sh[0] = "sh";
      sh[1] = path;
      for (i = 1; i <= n; i++) sh[i + 1] = argv[i];
      execve("/bin/sh", (char *const *)sh, (char *const *)envp);
    }
    err = errno;
    if (write(p[1], &err, sizeof(err)) < 0) { /* the parent sees EOF: reported as unknown */ }
    _exit(127);
  }
  err = errno;
  close(p[1]);
  if (pid < 0) {
    close(p[0]);
    lua_pushnil(L);
    lua_pushfstring(L, "fork: %s", strerror(err));
    return 2;
  }
  do { got = read(p[0], &err, sizeof(err)); } while (got < 0 && errno == EINTR);
  close(p[0]);
  if (got == (ssize_t)sizeof(err)) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) ;
    lua_pushnil(L);
    lua_pushstring(L, strerror(err));
    lua_pushinteger(L, err);
    return 3;
  }
  lua_pushinteger(L, pid);
  return 1;
}

/* -- wait ------------------------------------------------------------------- */

static double lk_now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* core.wait(pid [, seconds]) ->
**   "exited", status | "killed", signal   the process ended
**   "signal", signal, from_terminal       ljleak got INT, TERM, QUIT or HUP (from_terminal: the
**                                         kernel sent it to the whole foreground group: the
**                                         process got it too)
**   "timeout"                             SECONDS passed (none given: wait as long as it takes) */
static int proc_wait(lua_State *L)
{
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  double limit = luaL_optnumber(L, 2, -1), end = limit >= 0 ? lk_now() + limit : 0;
  lk_block_signals();
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    siginfo_t si;
    struct timespec ts;
    double left;
    if (r == pid) {
      if (WIFSIGNALED(st)) {
        lua_pushliteral(L, "killed");
        lua_pushinteger(L, WTERMSIG(st));
      } else {
        lua_pushliteral(L, "exited");
        lua_pushinteger(L, WEXITSTATUS(st));
      }
      return 2;
    }
    if (r < 0 && errno != EINTR) {
      lua_pushliteral(L, "exited");
      lua_pushinteger(L, 127);
      lua_pushstring(L, strerror(errno));
      return 3;
    }
    left = limit >= 0 ? end - lk_now() : 0.25;
    if (limit >= 0 && left <= 0) {
      lua_pushliteral(L, "timeout");
      return 1;
    }
    if (left > 0.25) left = 0.25;  /* SIGCHLD of an unrelated child must not keep us waiting */
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    if (sigtimedwait(&lk_watched, &si, &ts) > 0 && si.si_signo != SIGCHLD) {
      lua_pushliteral(L, "signal");
      lua_pushinteger(L, si.si_signo);
      lua_pushboolean(L, si.si_code == SI_KERNEL);
      return 3;
    }
  }
}

/* core.pending_signal() -> signal, from_terminal | nil: one of the watched signals that arrived
** while the CLI was busy (taken, so it is not seen twice). */
static int proc_pending(lua_State *L)
{
  siginfo_t si;
  struct timespec ts = { 0, 0 };
  sigset_t s;
  if (!lk_blocked) return 0;
  s = lk_watched;
  sigdelset(&s, SIGCHLD);
  if (sigtimedwait(&s, &si, &ts) > 0) {
    lua_pushinteger(L, si.si_signo);
    lua_pushboolean(L, si.si_code == SI_KERNEL);
    return 2;
  }
  return 0;
}

/* core.winsize(fd) -> rows, columns | nil: the size of the terminal FD is (for the status line). */
static int proc_winsize(lua_State *L)
{
  struct winsize ws;
  int fd = (int)luaL_checkinteger(L, 1);
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0 || ws.ws_col == 0) return 0;
  lua_pushinteger(L, ws.ws_row);
  lua_pushinteger(L, ws.ws_col);
  return 2;
}

static const luaL_Reg proc_funcs[] = {
  { "spawn", proc_spawn },
  { "wait", proc_wait },
  { "pending_signal", proc_pending },
  { "winsize", proc_winsize },
  { NULL, NULL }
};

void lk_proc_register(lua_State *L)
{
  luaL_register(L, NULL, proc_funcs);
}
