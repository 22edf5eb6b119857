# ljleak: build the tracker (LD_PRELOAD library), the Lua C module, and run tests.
# `make` builds into build/; `./bin/ljleak` then works from the checkout.

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -Wall -Wextra -Wno-unused-parameter
PICFLAGS = -fPIC -fvisibility=hidden
LUAJIT  ?= luajit
LUA_INCDIR ?= /usr/include/luajit-2.1

# Install locations (luarocks passes its own).
PREFIX  ?= /usr/local
LUADIR  ?= $(PREFIX)/share/lua/5.1
LIBDIR  ?= $(PREFIX)/lib/lua/5.1
BINDIR  ?= $(PREFIX)/bin
# The curated suppression files live next to the Lua modules that read them (ljleak.supp).
SUPPDIR ?= $(LUADIR)/ljleak/suppressions

B = build
# The tracker's parts, lowest first (each uses only parts before it: t/dag_spec.lua checks it).
TRACKER_PARTS = lk_state lk_lock lk_luaread lk_sys lk_unwind lk_intern lk_table lk_classify lk_maps lk_mmap lk_ctx lk_luavm \
                lk_stack lk_thread lk_alloc lk_scan lk_report lk_api lk_life lk_luaboot
VG_PARTS      = lk_luaread lk_vglua lk_vg lk_luaboot
CORE_PARTS    = lk_sym lk_proc lk_lua
HEADERS       = $(wildcard csrc/*.h)

TRACKER = $(B)/ljleak/libljleak.so
CORE    = $(B)/ljleak/core.so
VGLIB   = $(B)/ljleak/libljleak_vg.so
TRACKER_OBJ = $(patsubst %,$(B)/obj/tracker/%.o,$(TRACKER_PARTS))
VG_OBJ      = $(patsubst %,$(B)/obj/vg/%.o,$(VG_PARTS))
CORE_OBJ    = $(patsubst %,$(B)/obj/core/%.o,$(CORE_PARTS))

all: lib bytecode fixtures programs unit

# What an install needs (luarocks builds this target).
lib: $(TRACKER) $(CORE) $(VGLIB)

# The Lua modules as LuaJIT bytecode, with their debug information and named after their sources
# (-F): the CLI and every LuaJIT process it traces load them without parsing (5398 lines: 5-10 ms).
# bin/ljleak uses them while none of the sources is newer than the stamp, and the stamp names the
# sources' folder (a module finds files beside it by its chunk name: a moved or copied checkout runs
# its sources until `make`). `make install` installs them too (LIBDIR/ljleak/lua), made from the
# installed sources; luarocks installs from a folder it then moves: such a tree runs its sources.
LUA_SRC  = $(wildcard lua/ljleak/*.lua lua/ljleak/engine/*.lua)
# Compiling one module: $(LUA_BCC) CHUNKNAME SOURCE OUTPUT.
LUA_BCC  = $(LUAJIT) -b -g -t raw -F
LUA_BC   = $(patsubst lua/%,$(B)/lua/%,$(LUA_SRC))
# argparse (lua-argparse) too: parsing it is 1.2 ms of every run, its bytecode 0.3 ms. The stamp's
# second line names its source, which bin/ljleak also checks is not newer.
ARGPARSE_SRC := $(shell $(LUAJIT) -e 'io.write(package.searchpath("argparse", package.path) or "")' 2>/dev/null)
ARGPARSE_BC  = $(if $(ARGPARSE_SRC),$(B)/lua/argparse.lua)
bytecode: $(B)/lua/.stamp
$(B)/lua/.stamp: $(LUA_BC) $(ARGPARSE_BC)
	@printf '%s\n%s\n' "$(abspath lua)" "$(ARGPARSE_SRC)" > $@
$(B)/lua/argparse.lua: $(ARGPARSE_SRC)
	@mkdir -p $(dir $@)
	$(LUA_BCC) $< $< $@
$(B)/lua/%.lua: lua/%.lua
	@mkdir -p $(dir $@)
	$(LUA_BCC) $(abspath $<) $< $@

# -fno-plt: the malloc family calls glibc's through its GOT entry, not a PLT stub (the hot path).
$(B)/obj/tracker/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(PICFLAGS) -fno-plt -D_GNU_SOURCE -c -o $@ $<

# Preloaded under --engine=valgrind: client requests for Lua code, dlclose kept a no-op.
$(B)/obj/vg/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(PICFLAGS) -mno-red-zone -D_GNU_SOURCE -c -o $@ $<

$(B)/obj/core/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(PICFLAGS) -D_GNU_SOURCE -I$(LUA_INCDIR) -c -o $@ $<

$(VGLIB): $(VG_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $(VG_OBJ) -ldl -lpthread

$(TRACKER): $(TRACKER_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $(TRACKER_OBJ) -ldl -lpthread

$(CORE): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $(CORE_OBJ) -ldw -lelf -ldl

# Deliberately leaky C libraries used by the tests and the demo, and C programs (t/leak/stacks:
# a distinct stack per leaked block, for the report step at scale). With clang, -gdwarf-aranges:
# libdw finds a compile unit through .debug_aranges, which clang does not write by itself (the
# symbolizer also searches the units without it, only slower).
ARANGES := $(shell $(CC) -gdwarf-aranges -x c -c -o /dev/null /dev/null >/dev/null 2>&1 && echo -gdwarf-aranges)
FIXTURE_SRC = $(wildcard t/leak/lib*.c) $(wildcard examples/lib*.c)
FIXTURES    = $(patsubst %.c,$(B)/%.so,$(FIXTURE_SRC)) $(B)/t/leak/stacks
fixtures: $(FIXTURES)
$(B)/%.so: %.c
	@mkdir -p $(dir $@)
	$(CC) -O0 -g $(ARANGES) -fno-omit-frame-pointer -fPIC -shared -o $@ $< -lpthread
$(B)/t/leak/stacks: t/leak/stacks.c
	@mkdir -p $(dir $@)
	$(CC) -O0 -g $(ARANGES) -fno-omit-frame-pointer $(WARN) -o $@ $<

# Small C programs the tests run under the tracker (threads, forks, small stacks...).
PROGRAM_SRC = $(wildcard t/prog/*.c)
PROGRAMS    = $(patsubst %.c,$(B)/%,$(PROGRAM_SRC))
programs: $(PROGRAMS)
$(B)/t/prog/%: t/prog/%.c
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fno-omit-frame-pointer -pthread -o $@ $<
$(B)/t/prog/static_hello: t/prog/static_hello.c
	@mkdir -p $(dir $@)
	$(CC) -O1 -static -o $@ $<

# C unit tests (run by make test): pure layout learning, and parts of the tracker linked alone.
UNIT_TESTS = $(B)/unit/vm_layout $(B)/unit/table $(B)/unit/stopped $(B)/unit/intern $(B)/unit/classify $(B)/unit/unwind
unit: $(UNIT_TESTS)
O = $(B)/obj/tracker
$(B)/unit/vm_layout: t/unit/vm_layout.c csrc/lk_vmlayout.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -o $@ t/unit/vm_layout.c
$(B)/unit/table: t/unit/table.c t/unit/tap.h $(O)/lk_table.o $(O)/lk_sys.o $(O)/lk_lock.o $(O)/lk_state.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -o $@ $(filter %.c %.o,$^) -ldl
$(B)/unit/stopped: t/unit/stopped.c t/unit/tap.h $(O)/lk_table.o $(O)/lk_mmap.o $(O)/lk_sys.o $(O)/lk_lock.o \
                   $(O)/lk_state.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -o $@ $(filter %.c %.o,$^) -ldl
$(B)/unit/intern: t/unit/intern.c t/unit/tap.h $(O)/lk_intern.o $(O)/lk_sys.o $(O)/lk_lock.o $(O)/lk_state.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -o $@ $(filter %.c %.o,$^) -ldl
$(B)/unit/classify: t/unit/classify.c t/unit/tap.h $(O)/lk_classify.o $(O)/lk_table.o $(O)/lk_sys.o $(O)/lk_lock.o \
                    $(O)/lk_state.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -o $@ $(filter %.c %.o,$^) -ldl

$(B)/unit/unwind: t/unit/unwind.c t/unit/tap.h $(O)/lk_unwind.o $(O)/lk_sys.o $(O)/lk_lock.o $(O)/lk_state.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -o $@ $(filter %.c %.o,$^) -ldl -pthread

deps:
	@sh .ci/deps.sh

# The same with clang, into build/clang (make test runs the leak fixtures on it too).
clang:
	$(MAKE) CC=clang B=$(B)/clang all

test: deps all clang
	@sh t/run.sh

demo: deps all
	@sh examples/demo.sh

bench: deps all
	$(LUAJIT) bench/bench.lua

lint:
	luacheck lua t bench examples

# The launcher and `luajit -lljleak` (ljleak.reexec) get the install's paths; both also find a tree
# laid out as PREFIX/bin, PREFIX/share/lua/5.1 and PREFIX/lib/lua/5.1 wherever it is moved.
install: lib
	install -d $(DESTDIR)$(LUADIR)/ljleak $(DESTDIR)$(LIBDIR)/ljleak $(DESTDIR)$(BINDIR) $(DESTDIR)$(SUPPDIR)
	cp -R lua/ljleak/. $(DESTDIR)$(LUADIR)/ljleak/
	sed -e 's|@BINDIR@|$(BINDIR)|' lua/ljleak/reexec.lua > $(DESTDIR)$(LUADIR)/ljleak/reexec.lua
	install -m 0755 $(TRACKER) $(CORE) $(VGLIB) $(DESTDIR)$(LIBDIR)/ljleak/
	sed -e 's|@LUADIR@|$(LUADIR)|' -e 's|@LIBDIR@|$(LIBDIR)|' bin/ljleak > $(DESTDIR)$(BINDIR)/ljleak
	chmod 0755 $(DESTDIR)$(BINDIR)/ljleak
	install -m 0644 suppressions/*.supp $(DESTDIR)$(SUPPDIR)/
	@# The modules' bytecode (and argparse's), made from the installed sources and named after them,
	@# with the stamp bin/ljleak checks; a tree moved elsewhere (luarocks) runs its sources.
	install -d $(DESTDIR)$(LIBDIR)/ljleak/lua/ljleak/engine
	for f in $(patsubst lua/%,%,$(LUA_SRC)); do \
	  $(LUA_BCC) $(LUADIR)/$$f $(DESTDIR)$(LUADIR)/$$f $(DESTDIR)$(LIBDIR)/ljleak/lua/$$f || exit 1; \
	done
	$(if $(ARGPARSE_SRC),$(LUA_BCC) $(ARGPARSE_SRC) $(ARGPARSE_SRC) $(DESTDIR)$(LIBDIR)/ljleak/lua/argparse.lua)
	printf '%s\n%s\n' "$(LUADIR)" "$(ARGPARSE_SRC)" > $(DESTDIR)$(LIBDIR)/ljleak/lua/.stamp

# A source tarball of the files git tracks, as they are in the working tree (`git stash create`
# makes a commit of them without touching anything; HEAD when nothing changed), and the source
# rock `luarocks pack` makes of it: the rockspec's source.url names the tarball, made absolute
# here (luarocks fetches it from a folder of its own).
VERSION = scm-1
dist:
	@mkdir -p $(B)
	tree=$$(git stash create); git archive --format=tar.gz --prefix=ljleak/ -o $(B)/ljleak-$(VERSION).tar.gz $${tree:-HEAD}
rock: dist
	sed -e 's|file://build/|file://$(CURDIR)/$(B)/|' rockspec/ljleak-$(VERSION).rockspec > $(B)/ljleak-$(VERSION).rockspec
	cd $(B) && luarocks pack ljleak-$(VERSION).rockspec

clean:
	rm -rf $(B)

.PHONY: all lib bytecode fixtures programs unit clang deps test demo bench lint install dist rock clean
