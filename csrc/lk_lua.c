/* lk_lua.c: the Lua C module ljleak.core, loaded by the ljleak CLI.
** Exposes the ELF/DWARF symbolizer (lk_sym.c) as a userdata with named metatable, and a demangler. */

#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>

#include "lk_proc.h"
#include "lk_sym.h"

#define LK_VERSION	"0.1.0"
#define LK_SYM_MT	"ljleak.symbolizer"

#define LK_EXPORT	__attribute__((visibility("default")))

/* -- Symbolizer userdata -------------------------------------------------- */

typedef struct lk_symud {
  lk_sym *sym;	/* NULL once closed */
} lk_symud;

static lk_symud *sym_check(lua_State *L)
{
  return (lk_symud *)luaL_checkudata(L, 1, LK_SYM_MT);
}

static lk_sym *sym_checkopen(lua_State *L)
{
  lk_symud *u = sym_check(L);
  if (u->sym == NULL) luaL_argerror(L, 1, "symbolizer is closed");
  return u->sym;
}

/* Argument ARG: an offset, a file vaddr (a non-negative integer). */
static uint64_t sym_checkoffset(lua_State *L, int arg)
{
  lua_Number n = luaL_checknumber(L, arg);
  if (!(n >= 0 && n < 18446744073709551616.0 && (lua_Number)(uint64_t)n == n))
    luaL_argerror(L, arg, "offset must be a non-negative integer");
  return (uint64_t)n;
}

/* symbolizer:lookup(offset) -> function, file, line, offset_in_function, column
** Any of them nil where unknown. OFFSET is a file vaddr (already minus 1). */
static int sym_lookup(lua_State *L)
{
  lk_sym *s = sym_checkopen(L);
  lk_sym_info info;
  lk_sym_lookup(s, sym_checkoffset(L, 2), &info);
  if (info.func != NULL) lua_pushstring(L, info.func); else lua_pushnil(L);
  if (info.file != NULL) lua_pushstring(L, info.file); else lua_pushnil(L);
  if (info.line > 0) lua_pushinteger(L, info.line); else lua_pushnil(L);
  if (info.func != NULL) lua_pushnumber(L, (lua_Number)info.func_off);
  else lua_pushnil(L);
  if (info.column > 0) lua_pushinteger(L, info.column); else lua_pushnil(L);
  return 5;
}

/* symbolizer:name(offset) -> function, offset_in_function: the same from the symbol table only,
** without reading DWARF (nil, nil where no symbol covers OFFSET). */
static int sym_name(lua_State *L)
{
  lk_sym *s = sym_checkopen(L);
  lk_sym_info info;
  lk_sym_name(s, sym_checkoffset(L, 2), &info);
  if (info.func == NULL) return 0;
  lua_pushstring(L, info.func);
  lua_pushnumber(L, (lua_Number)info.func_off);
  return 2;
}

/* symbolizer:inlines(offset) -> nil | { {function}, {function, file, line}, ... }
** The inlined calls at OFFSET (lk_sym_inlines): the innermost inlined function first (its file
** and line are lookup's), then each function that inlined the one before, with where it calls
** it, down to the out-of-line function. nil when OFFSET is in no inlined code. */
static int sym_inlines(lua_State *L)
{
  lk_sym *s = sym_checkopen(L);
  lk_sym_frame frames[64];
  int count = lk_sym_inlines(s, sym_checkoffset(L, 2), frames, 64), i;
  if (count == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, count, 0);
  for (i = 0; i < count; i++) {
    lua_createtable(L, 0, 3);
    if (frames[i].func != NULL) {
      lua_pushstring(L, frames[i].func);
      lua_setfield(L, -2, "function");
    }
    if (frames[i].file != NULL) {
      lua_pushstring(L, frames[i].file);
      lua_setfield(L, -2, "file");
    }
    if (frames[i].line > 0) {
      lua_pushinteger(L, frames[i].line);
      lua_setfield(L, -2, "line");
    }
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* symbolizer:path() -> the path it was opened for */
static int sym_path(lua_State *L)
{
  lua_pushstring(L, lk_sym_path(sym_checkopen(L)));
  return 1;
}

/* symbolizer:close(): free libdw's state now instead of at collection. */
static int sym_close(lua_State *L)
{
  lk_symud *u = sym_check(L);
  lk_sym_close(u->sym);
  u->sym = NULL;
  return 0;
}

static int sym_tostring(lua_State *L)
{
  lk_symud *u = sym_check(L);
  if (u->sym == NULL)
    lua_pushstring(L, LK_SYM_MT " (closed)");
  else
    lua_pushfstring(L, LK_SYM_MT " (%s)", lk_sym_path(u->sym));
  return 1;
}

static const luaL_Reg sym_methods[] = {
  { "lookup", sym_lookup },
  { "name", sym_name },
  { "inlines", sym_inlines },
  { "path", sym_path },
  { "close", sym_close },
  { NULL, NULL }
};

static const luaL_Reg sym_meta[] = {
  { "__gc", sym_close },
  { "__tostring", sym_tostring },
  { NULL, NULL }
};

/* -- C++ names ------------------------------------------------------------ */

/* The C++ runtime's demangler, looked up at first use so that ljleak.core has no
** link-time dependency on libstdc++ (NULL when it is not installed). */
typedef char *(*lk_demangle_fn)(const char *name, char *buf, size_t *len, int *status);

static lk_demangle_fn lk_demangler(const char **err)
{
  static int tried;
  static lk_demangle_fn fn;
  static const char *why = "libstdc++.so.6 was not looked up";
  if (!tried) {
    void *h = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL);
    tried = 1;
    if (h == NULL) {
      why = "libstdc++.so.6 is not installed";
    } else {
      fn = (lk_demangle_fn)dlsym(h, "__cxa_demangle");
      if (fn == NULL) why = "libstdc++.so.6 has no __cxa_demangle";
    }
  }
  *err = why;
  return fn;
}

/* core.demangle(name) -> the demangled name | nil, message
** (NAME is not an Itanium C++ ABI name, or no demangler is available). */
static int core_demangle(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  const char *err;
  lk_demangle_fn fn;
  char *out;
  int status = 0;
  if (name[0] != '_' || name[1] != 'Z') {
    lua_pushnil(L);
    lua_pushliteral(L, "not a mangled C++ name");
    return 2;
  }
  fn = lk_demangler(&err);
  if (fn == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  out = fn(name, NULL, NULL, &status);
  if (out == NULL || status != 0) {
    free(out);
    lua_pushnil(L);
    lua_pushliteral(L, "not a mangled C++ name");
    return 2;
  }
  lua_pushstring(L, out);
  free(out);
  return 1;
}

/* -- Module functions ----------------------------------------------------- */

/* core.cache_key(path) -> the key a disk cache of lookups in the object at PATH is valid under
** (its build ID, then the state of the places its debug information may come from) | nil */
static int core_cache_key(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  char key[8192];
  if (!lk_sym_cache_key(path, key, sizeof(key))) return 0;
  lua_pushstring(L, key);
  return 1;
}

/* core.symbolizer(path) -> symbolizer | nil, message */
static int core_symbolizer(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  const char *err = NULL;
  lk_symud *u = (lk_symud *)lua_newuserdata(L, sizeof(*u));
  u->sym = NULL;
  luaL_getmetatable(L, LK_SYM_MT);
  lua_setmetatable(L, -2);
  u->sym = lk_sym_open(path, &err);
  if (u->sym == NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, err != NULL ? err : "cannot open");
    return 2;
  }
  return 1;
}

static const luaL_Reg core_funcs[] = {
  { "symbolizer", core_symbolizer },
  { "demangle", core_demangle },
  { "cache_key", core_cache_key },
  { NULL, NULL }
};

LK_EXPORT int luaopen_ljleak_core(lua_State *L)
{
  luaL_newmetatable(L, LK_SYM_MT);
  luaL_register(L, NULL, sym_meta);
  lua_newtable(L);
  luaL_register(L, NULL, sym_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  lua_newtable(L);
  luaL_register(L, NULL, core_funcs);
  lk_proc_register(L);
  lua_pushliteral(L, LK_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
