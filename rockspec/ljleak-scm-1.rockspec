-- From a checkout: `luarocks make rockspec/ljleak-scm-1.rockspec` builds and installs it; `make rock`
-- makes a source rock, build/ljleak-scm-1.src.rock (`luarocks pack` of the tarball `make dist`
-- writes, with source.url made absolute); `luarocks test` runs `make test`. The build needs a C compiler, LuaJIT's headers, libdw-dev and libelf-dev; the
-- tracker needs libunwind8 at run time; the CLI runs under LuaJIT (luajit on PATH).
--
-- The Lua dependencies below are luarocks' names. On Debian and Ubuntu take them from the
-- distribution instead (lua-cjson lua-argparse lua-filesystem lua-posix lua-expat: `make deps`),
-- which luarocks does not see, and install with `--deps-mode=none`.
rockspec_format = "3.0"
package = "ljleak"
version = "scm-1"
source = {
   -- The tarball `make dist` writes, relative to the checkout (`make rock` makes it absolute for
   -- luarocks pack). A release points this at the published tarball or repository.
   url = "file://build/ljleak-scm-1.tar.gz",
   dir = "ljleak",
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
   "lua >= 5.1, < 5.2",
   "lua-cjson >= 2.1.0",
   "argparse >= 0.7.0",
   "luafilesystem >= 1.8.0",
   "luaposix >= 33.4.0",
   "luaexpat >= 1.4.0",
}
build = {
   type = "make",
   build_target = "lib",
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
-- busted, luacheck, valgrind and the rest come from Debian (`make deps`, which `make test` runs).
test = {
   type = "command",
   command = "make test",
}
