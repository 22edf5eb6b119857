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
TRACKER_SRC = csrc/lk_alloc.c csrc/lk_life.c csrc/lk_sys.c csrc/lk_table.c csrc/lk_stack.c csrc/lk_scan.c csrc/lk_report.c \
              csrc/lk_thread.c csrc/lk_maps.c csrc/lk_luavm.c csrc/lk_luaread.c csrc/lk_intern.c csrc/lk_api.c \
              csrc/lk_luaboot.c
TRACKER_HDR = $(wildcard csrc/*.h)
CORE_SRC    = csrc/lk_lua.c csrc/lk_sym.c csrc/lk_proc.c

TRACKER = $(B)/ljleak/libljleak.so
CORE    = $(B)/ljleak/core.so
VGLIB   = $(B)/ljleak/libljleak_vg.so

all: $(TRACKER) $(CORE) $(VGLIB) fixtures programs unit

# Preloaded under --engine=valgrind: client requests for Lua code, dlclose kept a no-op.
VG_SRC = csrc/lk_vg.c csrc/lk_vglua.c csrc/lk_luaread.c csrc/lk_luaboot.c
$(VGLIB): $(VG_SRC) csrc/lk_ljalloc.h csrc/lk_luaread.h csrc/lk_vmlayout.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(PICFLAGS) -mno-red-zone -D_GNU_SOURCE -shared -o $@ $(VG_SRC) -ldl -lpthread

$(TRACKER): $(TRACKER_SRC) $(TRACKER_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(PICFLAGS) -D_GNU_SOURCE -shared -o $@ $(TRACKER_SRC) -ldl -lpthread

$(CORE): $(CORE_SRC) $(TRACKER_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(PICFLAGS) -D_GNU_SOURCE -I$(LUA_INCDIR) -shared -o $@ $(CORE_SRC) -ldw -lelf -ldl

# Deliberately leaky C libraries used by the tests and the demo, and C programs (t/leak/stacks:
# a distinct stack per leaked block, for the report step at scale).
FIXTURE_SRC = $(wildcard t/leak/lib*.c) $(wildcard examples/lib*.c)
FIXTURES    = $(patsubst %.c,$(B)/%.so,$(FIXTURE_SRC)) $(B)/t/leak/stacks
fixtures: $(FIXTURES)
$(B)/%.so: %.c
	@mkdir -p $(dir $@)
	$(CC) -O0 -g -fno-omit-frame-pointer -fPIC -shared -o $@ $< -lpthread
$(B)/t/leak/stacks: t/leak/stacks.c
	@mkdir -p $(dir $@)
	$(CC) -O0 -g -fno-omit-frame-pointer $(WARN) -o $@ $<

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

# C unit tests (run by make test).
unit: $(B)/vm_layout_test
$(B)/vm_layout_test: t/unit/vm_layout.c csrc/lk_vmlayout.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -o $@ t/unit/vm_layout.c

deps:
	@sh .ci/deps.sh

test: deps all
	@sh t/run.sh

demo: deps all
	@sh examples/demo.sh

bench: deps all
	$(LUAJIT) bench/bench.lua

lint:
	luacheck lua t bench examples

install: all
	install -d $(DESTDIR)$(LUADIR)/ljleak $(DESTDIR)$(LIBDIR)/ljleak $(DESTDIR)$(BINDIR) $(DESTDIR)$(SUPPDIR)
	cp -R lua/ljleak/. $(DESTDIR)$(LUADIR)/ljleak/
	install -m 0755 $(TRACKER) $(CORE) $(VGLIB) $(DESTDIR)$(LIBDIR)/ljleak/
	sed -e 's|@LUADIR@|$(LUADIR)|' -e 's|@LIBDIR@|$(LIBDIR)|' bin/ljleak > $(DESTDIR)$(BINDIR)/ljleak
	chmod 0755 $(DESTDIR)$(BINDIR)/ljleak
	install -m 0644 suppressions/*.supp $(DESTDIR)$(SUPPDIR)/

clean:
	rm -rf $(B)

.PHONY: all fixtures programs unit deps test demo bench lint install clean
