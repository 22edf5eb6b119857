/* lk_sym.c: symbolizer for code offsets in one ELF object.
** libdwfl in offline mode: symbol table for names, DWARF line table for file and line. */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <elfutils/libdwelf.h>
#include <dwarf.h>
#include <elfutils/libdwfl.h>

#include "lk_sym.h"

struct lk_sym {
  Dwfl *dwfl;
  Dwfl_Module *mod;
  char *path;
  GElf_Addr memo_addr;	/* last symbol start whose aliases were ranked */
  char *memo_name;	/* and the name chosen for it, without @version */
  size_t memo_cap;
};

/* -- libdwfl callbacks ---------------------------------------------------- */

/* NULL: the standard search path ":.debug:/usr/lib/debug", which also finds
** /usr/lib/debug/.build-id/xx/yyyy.debug files by build ID. */
static char *lk_debuginfo_path = NULL;

#define LK_DEBUG_ROOT "/usr/lib/debug"

/* -- Where separate debug information may be ---------------------------------
** The places libdwfl's standard search looks, by build ID and by .gnu_debuglink (or
** FILE.debug) beside the object, in its .debug/, and under /usr/lib/debug. */

static int lk_debuginfod_wanted(void)
{
  const char *urls = getenv("DEBUGINFOD_URLS");
  return urls != NULL && urls[0] != '\0';
}

/* Calls FN on each place a debug file for the object at PATH, with the build ID ID (hex, or
** NULL) and the debuglink LINK (or NULL), may be found; stops when FN returns nonzero, and
** returns that. */
static int lk_debug_places(const char *path, const char *id, const char *link,
			   int (*fn)(const char *place, void *ud), void *ud)
{
  char buf[4096], dirbuf[4096], name[1024], *canon = NULL;
  const char *paths[2];
  int i, r = 0;
  if (id != NULL && strlen(id) > 2) {
    snprintf(buf, sizeof(buf), LK_DEBUG_ROOT "/.build-id/%.2s/%s.debug", id, id + 2);
    if ((r = fn(buf, ud)) != 0) return r;
  }
  paths[0] = path;
  paths[1] = canon = realpath(path, NULL);
  for (i = 0; i < 2 && r == 0 && paths[i] != NULL; i++) {
    const char *dir;
    if (i == 1 && strcmp(paths[0], paths[1]) == 0) break;
    snprintf(dirbuf, sizeof(dirbuf), "%s", paths[i]);
    dir = dirname(dirbuf);
    if (link != NULL) snprintf(name, sizeof(name), "%s", link);
    else snprintf(name, sizeof(name), "%s.debug", strrchr(paths[i], '/') ? strrchr(paths[i], '/') + 1 : paths[i]);
    snprintf(buf, sizeof(buf), "%s/%s", dir, name);
    if ((r = fn(buf, ud)) != 0) break;
    snprintf(buf, sizeof(buf), "%s/.debug/%s", dir, name);
    if ((r = fn(buf, ud)) != 0) break;
    snprintf(buf, sizeof(buf), LK_DEBUG_ROOT "%s%s/%s", dir[0] == '/' ? "" : "/", dir, name);
    r = fn(buf, ud);
  }
  free(canon);
  return r;
}

typedef struct { const char *path; struct stat main; } lk_place_ud;

static int lk_place_exists(const char *place, void *ud)
{
  lk_place_ud *u = ud;
  struct stat st;
  return stat(place, &st) == 0 && S_ISREG(st.st_mode) &&
    !(st.st_dev == u->main.st_dev && st.st_ino == u->main.st_ino);
}

/* libdwfl's standard search ends by asking debuginfod servers, and to know whether any is
** configured it loads libdebuginfod and the ~30 libraries that needs (libcurl, TLS...): 25 ms
** and 8 MB, for every object without local debug information. So: by build ID first; then the
** standard search only when a debug file is there to be found by name, or DEBUGINFOD_URLS names
** a server. */
static int lk_find_debuginfo(Dwfl_Module *mod, void **userdata, const char *modname,
			     GElf_Addr base, const char *file_name, const char *debuglink_file,
			     GElf_Word debuglink_crc, char **debuginfo_file_name)
{
  lk_place_ud u;
  int fd = dwfl_build_id_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file,
					debuglink_crc, debuginfo_file_name);
  if (fd >= 0) return fd;
  u.path = file_name;
  if (lk_debuginfod_wanted() ||
      (file_name != NULL && stat(file_name, &u.main) == 0 &&
       lk_debug_places(file_name, NULL, debuglink_file, lk_place_exists, &u)))
    return dwfl_standard_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file,
					debuglink_crc, debuginfo_file_name);
  errno = 0;
  return -1;
}

/* Must outlive every Dwfl made with it: libdwfl keeps the pointer. */
static const Dwfl_Callbacks lk_offline_callbacks = {
  .find_elf = dwfl_build_id_find_elf,
  .find_debuginfo = lk_find_debuginfo,
  .section_address = dwfl_offline_section_address,
  .debuginfo_path = &lk_debuginfo_path,
};

/* -- Open and close ------------------------------------------------------- */

lk_sym *lk_sym_open(const char *path, const char **err)
{
  lk_sym *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    *err = "out of memory";
    return NULL;
  }
  s->path = strdup(path);
  s->dwfl = dwfl_begin(&lk_offline_callbacks);
  if (s->path == NULL || s->dwfl == NULL) {
    *err = s->path == NULL ? "out of memory" : dwfl_errmsg(-1);
    lk_sym_close(s);
    return NULL;
  }
  dwfl_report_begin(s->dwfl);
  /* Base 0 and add_p_vaddr: the module's bias is 0, so a dwfl address is
  ** the file's own vaddr, for ET_DYN (libraries, PIE) and ET_EXEC alike. */
  s->mod = dwfl_report_elf(s->dwfl, path, path, -1, 0, true);
  if (s->mod == NULL || dwfl_report_end(s->dwfl, NULL, NULL) != 0) {
    *err = dwfl_errmsg(-1);
    if (*err == NULL) *err = "cannot read ELF file";
    lk_sym_close(s);
    return NULL;
  }
  return s;
}

void lk_sym_close(lk_sym *s)
{
  if (s == NULL) return;
  if (s->dwfl != NULL) dwfl_end(s->dwfl);
  free(s->memo_name);
  free(s->path);
  free(s);
}

const char *lk_sym_path(const lk_sym *s)
{
  return s->path;
}

/* -- Alias choice ------------------------------------------------------- */

/* Length of NAME without a symbol version ("__libc_start_main@@GLIBC_2.34"
** in a .symtab: the assembler's spelling of a versioned definition). */
static size_t lk_base_len(const char *name)
{
  return strcspn(name, "@");
}

static int lk_underscores(const char *name)
{
  int n = 0;
  while (name[n] == '_') n++;
  return n;
}

/* Is A a better name than B for the same code? The name people write:
** fewer leading underscores (malloc, not __libc_malloc; strdup, not
** __strdup), then an exported one (__libc_start_main, not the local
** __libc_start_main_impl), then the shorter, then the first in byte order. */
static int lk_better_name(const char *a, int a_local, const char *b, int b_local)
{
  int ua = lk_underscores(a), ub = lk_underscores(b), c;
  size_t la = lk_base_len(a), lb = lk_base_len(b);
  if (ua != ub) return ua < ub;
  if (a_local != b_local) return b_local;
  if (la != lb) return la < lb;
  c = strncmp(a, b, la);
  return c != 0 ? c < 0 : strlen(a) < strlen(b);
}

/* libdwfl returns one of the symbols at ADDR (it prefers GLOBAL over WEAK
** and LOCAL); rank all of them of the same type and return the best name,
** without its version, in a buffer valid until the next call. */
static const char *lk_pick_alias(lk_sym *s, GElf_Addr addr, const GElf_Sym *sym,
				 const char *name)
{
  int i, n, local = GELF_ST_BIND(sym->st_info) == STB_LOCAL;
  size_t len;
  if (s->memo_name != NULL && s->memo_addr == addr) return s->memo_name;
  n = dwfl_module_getsymtab(s->mod);
  for (i = 1; i < n; i++) {
    GElf_Sym other;
    GElf_Addr oaddr = 0;
    const char *oname = dwfl_module_getsym_info(s->mod, i, &other, &oaddr,
						NULL, NULL, NULL);
    if (oname != NULL && oname[0] != '\0' && oname[0] != '@' &&
	oaddr == addr && other.st_shndx != SHN_UNDEF &&
	GELF_ST_TYPE(other.st_info) == GELF_ST_TYPE(sym->st_info)) {
      int olocal = GELF_ST_BIND(other.st_info) == STB_LOCAL;
      if (lk_better_name(oname, olocal, name, local)) {
	name = oname;
	local = olocal;
      }
    }
  }
  len = lk_base_len(name);
  if (len + 1 > s->memo_cap) {
    char *buf = realloc(s->memo_name, len + 1);
    if (buf == NULL) return NULL;
    s->memo_name = buf;
    s->memo_cap = len + 1;
  }
  memcpy(s->memo_name, name, len);
  s->memo_name[len] = '\0';
  s->memo_addr = addr;
  return s->memo_name;
}

/* -- Lookup --------------------------------------------------------------- */

/* The line of OFF found through the compile units themselves: libdw finds a unit by
** .debug_aranges, which some compilers (clang without -gdwarf-aranges) do not write. NULL if
** no unit covers OFF. */
static Dwarf_Line *lk_src_by_units(lk_sym *s, Dwarf_Addr off)
{
  Dwarf_Die *cu = NULL;
  Dwarf_Addr bias = 0;
  while ((cu = dwfl_module_nextcu(s->mod, cu, &bias)) != NULL) {
    if (off >= bias && dwarf_haspc(cu, off - bias) == 1) {
      Dwarf_Line *ln = dwarf_getsrc_die(cu, off - bias);
      if (ln != NULL) return ln;
    }
  }
  return NULL;
}

/* The symbol table's part of a lookup: info->func and info->func_off. It never reads DWARF
** (which libdw reads whole, decompressing it, on first use). */
int lk_sym_name(lk_sym *s, uint64_t off, lk_sym_info *info)
{
  GElf_Off symoff = 0;
  GElf_Sym sym;
  const char *name;

  memset(info, 0, sizeof(*info));
  memset(&sym, 0, sizeof(sym));
  name = dwfl_module_addrinfo(s->mod, (GElf_Addr)off, &symoff, &sym,
			      NULL, NULL, NULL);
  /* A sized symbol that ends before OFF is only the nearest one below: in a
  ** stripped library that is an exported function next to a static one. */
  if (name != NULL && name[0] != '\0' &&
      (sym.st_size == 0 || symoff < sym.st_size)) {
    info->func = lk_pick_alias(s, (GElf_Addr)off - symoff, &sym, name);
    info->func_off = symoff;
  }
  return 0;
}

int lk_sym_lookup(lk_sym *s, uint64_t off, lk_sym_info *info)
{
  Dwfl_Line *ln;

  lk_sym_name(s, off, info);
  ln = dwfl_module_getsrc(s->mod, (Dwarf_Addr)off);
  if (ln != NULL) {
    Dwarf_Addr a = 0;
    int line = 0, col = 0;
    const char *file = dwfl_lineinfo(ln, &a, &line, &col, NULL, NULL);
    if (file != NULL && file[0] != '\0') {
      info->file = file;
      info->line = line;
      info->column = col;
    }
  } else {
    Dwarf_Line *dl = lk_src_by_units(s, (Dwarf_Addr)off);
    const char *file = dl != NULL ? dwarf_linesrc(dl, NULL, NULL) : NULL;
    if (file != NULL && file[0] != '\0') {
      info->file = file;
      dwarf_lineno(dl, &info->line);
      dwarf_linecol(dl, &info->column);
    }
  }
  return 0;
}

/* -- Cache keys -------------------------------------------------------------
** What symbolize.lua's disk cache files the answers for an object under: its build ID, then the
** state (size and change time, or absence) of each place its separate debug information may come
** from, so that a debug file installed, rebuilt or removed later is seen; and whether debuginfod
** servers may be asked. 0 when the object has no build ID (its answers are not cached). */

typedef struct { char *out; size_t size, len; } lk_key_ud;

static int lk_key_place(const char *place, void *ud)
{
  lk_key_ud *u = ud;
  struct stat st;
  int n;
  if (stat(place, &st) == 0)
    n = snprintf(u->out + u->len, u->size - u->len, " %lld.%ld.%ld", (long long)st.st_size,
		 (long)st.st_ctim.tv_sec, (long)st.st_ctim.tv_nsec);
  else
    n = snprintf(u->out + u->len, u->size - u->len, " -");
  if (n < 0 || (size_t)n >= u->size - u->len) return 1;  /* no room: give up */
  u->len += (size_t)n;
  return 0;
}

/* The .gnu_debuglink name of ELF, or NULL. */
static const char *lk_debuglink(Elf *elf)
{
  GElf_Word crc;
  return dwelf_elf_gnu_debuglink(elf, &crc);
}

int lk_sym_cache_key(const char *path, char *out, size_t size)
{
  const unsigned char *id = NULL;
  lk_key_ud u = { out, size, 0 };
  ssize_t n, i;
  int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;
  Elf *elf;
  if (fd < 0) return 0;
  elf_version(EV_CURRENT);
  elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
  n = elf != NULL ? dwelf_elf_gnu_build_id(elf, (const void **)&id) : -1;
  if (n > 0 && size > (size_t)(2 * n + 64)) {
    for (i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", id[i]);
    u.len = (size_t)(2 * n);
    r = lk_debug_places(path, out, lk_debuglink(elf), lk_key_place, &u) == 0;
    if (r && lk_debuginfod_wanted()) {
      const char *urls = getenv("DEBUGINFOD_URLS");
      int k = snprintf(out + u.len, size - u.len, " debuginfod=%s", urls);
      r = k > 0 && (size_t)k < size - u.len;
    }
  }
  if (elf != NULL) elf_end(elf);
  close(fd);
  return r;
}

/* -- Inlined calls -------------------------------------------------------- */

/* The compile unit covering OFF, and its bias: through .debug_aranges, else unit by unit. */
static Dwarf_Die *lk_cu_of(lk_sym *s, Dwarf_Addr off, Dwarf_Addr *bias)
{
  Dwarf_Die *cu = dwfl_module_addrdie(s->mod, off, bias);
  if (cu != NULL) return cu;
  while ((cu = dwfl_module_nextcu(s->mod, cu, bias)) != NULL)
    if (off >= *bias && dwarf_haspc(cu, off - *bias) == 1) return cu;
  return NULL;
}

/* A function's name as symbols have it: its linkage name (C++), else its name (through
** DW_AT_abstract_origin and DW_AT_specification). */
static const char *lk_die_name(Dwarf_Die *die)
{
  Dwarf_Attribute attr;
  const char *name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_linkage_name, &attr));
  if (name == NULL) name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr));
  if (name == NULL) name = dwarf_diename(die);
  return name;
}

static int lk_is_function(Dwarf_Die *die)
{
  int tag = dwarf_tag(die);
  return tag == DW_TAG_inlined_subroutine || tag == DW_TAG_subprogram;
}

int lk_sym_inlines(lk_sym *s, uint64_t off, lk_sym_frame *out, int max)
{
  Dwarf_Addr bias = 0, dbias = 0;
  Dwarf_Die *cu = lk_cu_of(s, (Dwarf_Addr)off, &bias), *scopes = NULL, inner;
  Dwarf_Files *files = NULL;
  Dwarf *dw;
  int n, i, count = 0;
  if (cu == NULL || max <= 0) return 0;
  /* The innermost scope at OFF; then its enclosing scopes as the DIE tree nests them (an
  ** inlined instance inside the function that inlined it), as elfutils' addr2line -i does. */
  n = dwarf_getscopes(cu, (Dwarf_Addr)off - bias, &scopes);
  if (n <= 0) { free(scopes); return 0; }
  dw = dwfl_module_getdwarf(s->mod, &dbias);
  if (dw == NULL || dwarf_offdie(dw, dwarf_dieoffset(&scopes[0]), &inner) == NULL) { free(scopes); return 0; }
  free(scopes);
  scopes = NULL;
  n = dwarf_getscopes_die(&inner, &scopes);
  if (n <= 0) { free(scopes); return 0; }
  for (i = 0; i < n && !lk_is_function(&scopes[i]); i++) ;  /* lexical blocks */
  if (i == n || dwarf_tag(&scopes[i]) != DW_TAG_inlined_subroutine) { free(scopes); return 0; }
  if (dwarf_getsrcfiles(cu, &files, NULL) != 0) files = NULL;
  out[count++] = (lk_sym_frame){ lk_die_name(&scopes[i]), NULL, 0 };
  while (count < max && dwarf_tag(&scopes[i]) == DW_TAG_inlined_subroutine) {
    Dwarf_Attribute attr;
    Dwarf_Word file = 0, line = 0;
    int j;
    for (j = i + 1; j < n && !lk_is_function(&scopes[j]); j++) ;
    if (j == n) break;
    out[count].func = lk_die_name(&scopes[j]);
    out[count].file = NULL;
    out[count].line = 0;
    if (files != NULL && dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &file) == 0)
      out[count].file = dwarf_filesrc(files, file, NULL, NULL);
    if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &line) == 0)
      out[count].line = (int)line;
    count++;
    i = j;
  }
  free(scopes);
  return count;
}
