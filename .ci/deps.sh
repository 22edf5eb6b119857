#!/bin/sh
# Installs what ljleak needs to build, test and demo, from Debian's packages, and only what is
# missing. Called by `make deps` (and so by `make`, `make test`, `make demo`, `make bench`).
# libc6-dbg: names for glibc's and ld.so's internal functions, which the default suppressions
# match by name (both engines); time: GNU time, for make bench; lua5.1 and its headers: the Lua
# luarocks builds and runs for (the launcher then re-runs itself under luajit); clang: make test
# builds ljleak and its fixtures with it too; perl: prove, which runs the Test::Nginx-like suites
# of t/testnginx/; libxml2-utils: xmllint, which checks the JUnit XML against Jenkins' and Ant's
# schemas (t/junit_spec.lua).
set -eu
PKGS="gcc clang make libc6-dev luajit2 libluajit2-5.1-dev libunwind8 libdw-dev libelf-dev
      lua-cjson lua-argparse lua-filesystem lua-posix lua-expat lua-busted lua-luassert
      lua-check luarocks valgrind lua-socket nginx libnginx-mod-http-ndk libnginx-mod-http-lua
      lua-resty-core lua-resty-lrucache perl libc6-dbg time lua5.1 liblua5.1-0-dev libxml2-utils"
missing=""
for p in $PKGS; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
echo "ljleak: installing Debian packages:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "ljleak: need root to install:$missing (apt-get install$missing)" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
