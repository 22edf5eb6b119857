-- Install with `luarocks make rockspec/ljleak-scm-1.rockspec` from a checkout.
-- Its Lua dependencies come from Debian's packages (make deps): lua-cjson, lua-argparse,
-- lua-filesystem, lua-posix; the build needs libdw-dev, and the tracker libunwind8 at run time.
rockspec_format = "3.0"
package = "ljleak"
version = "scm-1"
source = {
   url = "git+file://.",
}
description = {
   summary = "Memory-leak checker for LuaJIT FFI code, the C libraries it drives and Lua C modules",
   detailed = [[
ljleak runs a program (plain luajit scripts, busted suites, anything dynamically linked) with
an LD_PRELOADed allocation tracker, classifies every block still live at exit the way Valgrind
does (definite, indirect, possible, reachable), knows that pointers kept in LuaJIT cdata are not
leaks, and gates CI with an exit code.]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.1",
}
build = {
   type = "make",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
   install_variables = {
      PREFIX = "$(PREFIX)",
      LUADIR = "$(LUADIR)",
      LIBDIR = "$(LIBDIR)",
      BINDIR = "$(BINDIR)",
      SUPPDIR = "$(LUADIR)/ljleak/suppressions",
   },
}
