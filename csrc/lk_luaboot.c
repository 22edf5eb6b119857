/* ljleak: Lua code for the Lua states a program opens itself (nginx's Lua module), which read no
** LUA_INIT: $LJLEAK_LUA_BOOT, run after luaL_openlibs and after a luaopen_ffi the program calls. */
#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lk_def.h"

/* -- The code, saved when the library loads --------------------------------------------------
** The environment's strings may be overwritten later (nginx writes its process title over them),
** and the allocator must not be called for it (the tracker would count the copy): a mapping of
** its own holds it. */

static const char *lk_boot;
static size_t lk_boot_len;
static void *lk_self;   /* any address in this library */

__attribute__((constructor)) static void lk_luaboot_init(void)
{
  const char *code = getenv(LK_ENV_LUA_BOOT);
  size_t n = code ? strlen(code) : 0;
  void *p;
  lk_self = (void *)lk_luaboot_init;
  if (!n) return;
  p = (void *)syscall(SYS_mmap, NULL, n + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;
  memcpy(p, code, n + 1);
  lk_boot = p;
  lk_boot_len = n;
}

/* -- The Lua C API, where the program found it --------------------------------------------- */

typedef void (*lk_openlibs_f)(void *L);
typedef int (*lk_cfunction_f)(void *L);
typedef int (*lk_loadbuffer_f)(void *L, const char *buf, size_t n, const char *name);
typedef int (*lk_pcall_f)(void *L, int nargs, int nresults, int errfunc);
typedef int (*lk_gettop_f)(void *L);
typedef void (*lk_settop_f)(void *L, int idx);
typedef const char *(*lk_tolstring_f)(void *L, int idx, size_t *len);

typedef struct { const char *name; void *found; } lk_lookup;

/* dl_iterate_phdr callback: NAME in an object other than this library (one that dlopen loaded
** without RTLD_GLOBAL is not seen by RTLD_NEXT). */
static int lk_find_in(struct dl_phdr_info *info, size_t size, void *ud)
{
  lk_lookup *l = ud;
  Dl_info self = {0};
  void *h, *sym;
  (void)size;
  if (!info->dlpi_name || !info->dlpi_name[0]) return 0;
  if (dladdr(lk_self, &self) && self.dli_fname && !strcmp(self.dli_fname, info->dlpi_name)) return 0;
  h = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
  if (!h) return 0;
  sym = dlsym(h, l->name);
  dlclose(h);
  if (sym) {
    Dl_info where;
    if (!dladdr(sym, &where) || !self.dli_fname || !where.dli_fname || strcmp(where.dli_fname, self.dli_fname)) {
      l->found = sym;
      return 1;
    }
  }
  return 0;
}

static void *lk_lua_fn(const char *name)
{
  lk_lookup l = { name, dlsym(RTLD_NEXT, name) };
  if (!l.found) dl_iterate_phdr(lk_find_in, &l);
  return l.found;
}

/* One line on stderr: A, then NB bytes of B. */
static void lk_say(const char *a, const char *b, size_t nb)
{
  if (write(2, a, strlen(a)) < 0 || write(2, b, nb) < 0 || write(2, "\n", 1) < 0) { /* nothing to do */ }
}

static void *lk_booted;   /* the Lua state the code ran in last */

/* Before the code runs again in a state: its modules are loaded anew (their FFI declarations and
** the JIT's event handler are bound to the FFI state they were loaded with). */
static const char lk_reboot[] =
  "for name in pairs(package.loaded) do\n"
  "  if name == 'ljleak' or tostring(name):match('^ljleak%.') then package.loaded[name] = nil end\n"
  "end";

/* Run CODE (N bytes) in L, with the stack left as it was. */
static void lk_boot_chunk(void *L, const char *code, size_t n)
{
  lk_loadbuffer_f loadbuffer = (lk_loadbuffer_f)lk_lua_fn("luaL_loadbuffer");
  lk_pcall_f pcall = (lk_pcall_f)lk_lua_fn("lua_pcall");
  lk_gettop_f gettop = (lk_gettop_f)lk_lua_fn("lua_gettop");
  lk_settop_f settop = (lk_settop_f)lk_lua_fn("lua_settop");
  lk_tolstring_f tolstring = (lk_tolstring_f)lk_lua_fn("lua_tolstring");
  int top;
  if (!loadbuffer || !pcall || !gettop || !settop || !tolstring) {
    static const char why[] = "no Lua C API beside luaL_openlibs: LJLEAK_LUA_BOOT not run";
    lk_say("ljleak: ", why, sizeof(why) - 1);
    return;
  }
  top = gettop(L);
  if (loadbuffer(L, code, n, "=ljleak") != 0 || pcall(L, 0, 0, 0) != 0) {
    size_t len = 0;
    const char *msg = tolstring(L, -1, &len);
    lk_say("ljleak: LJLEAK_LUA_BOOT failed: ", msg ? msg : "?", msg ? len : 1);
  }
  settop(L, top);
}

static void lk_boot_run(void *L)
{
  lk_boot_chunk(L, lk_boot, lk_boot_len);
  lk_booted = L;
}

/* -- The hooks ---------------------------------------------------------------------------- */

LK_EXPORT void luaL_openlibs(void *L)
{
  static lk_openlibs_f real;
  if (!real) real = (lk_openlibs_f)lk_lua_fn("luaL_openlibs");
  if (!real) abort();   /* the caller found this symbol, so a Lua library must have it */
  real(L);
  if (lk_boot) lk_boot_run(L);
}

/* nginx's Lua module calls luaopen_ffi itself, after luaL_openlibs: that makes a new FFI state, which
** forgets every declaration and finalizer made before. The code runs again. */
LK_EXPORT int luaopen_ffi(void *L)
{
  static lk_cfunction_f real;
  int n;
  if (!real) real = (lk_cfunction_f)lk_lua_fn("luaopen_ffi");
  if (!real) abort();
  n = real(L);
  if (lk_boot && L == lk_booted) {
    lk_boot_chunk(L, lk_reboot, sizeof(lk_reboot) - 1);
    lk_boot_run(L);
  }
  return n;
}

