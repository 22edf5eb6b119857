#!/bin/sh
# Installs what ljleak needs to build, test and demo, from Debian's packages, and only what is
# missing. Called by `make deps` (and so by `make`, `make test`, `make demo`, `make bench`).
# libc6-dbg: names for glibc's and ld.so's internal functions, which the default suppressions
# match by name (both engines); time: GNU time, for make bench; lua5.1 and its headers: the Lua
# luarocks builds and runs for (the launcher then re-runs itself under luajit); clang: make test
# builds ljleak and its fixtures with it too; perl: prove, which runs the Test::Nginx-like suites
# of t/testnginx/; libxml2-utils: xmllint, which checks the JUnit XML against Jenkins' and Ant's
# schemas (t/junit_spec.lua). chromium (headless): the HTML report's tests render the page in it;
# they are pending, saying so, if it cannot be installed (a failure to install it alone is said
# and does not stop the rest).
set -eu
PKGS="gcc clang make libc6-dev luajit2 libluajit2-5.1-dev libunwind8 libdw-dev libelf-dev
      lua-cjson lua-argparse lua-filesystem lua-posix lua-expat lua-busted lua-luassert
      lua-check luarocks valgrind lua-socket nginx libnginx-mod-http-ndk libnginx-mod-http-lua
      lua-resty-core lua-resty-lrucache perl libc6-dbg time lua5.1 liblua5.1-0-dev libxml2-utils"
OPTIONAL="chromium"
installed() {
  case "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" in *"install ok installed"*) return 0 ;; esac
  return 1
}
missing=""
for p in $PKGS; do installed "$p" || missing="$missing $p"; done
optional=""
for p in $OPTIONAL; do installed "$p" || optional="$optional $p"; done
[ -z "$missing$optional" ] && exit 0
echo "ljleak: installing Debian packages:$missing$optional" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; elif [ -n "$missing" ]; then
    echo "ljleak: need root to install:$missing (apt-get install$missing)" >&2; exit 1
  else
    echo "ljleak: need root to install:$optional; the tests that need it will be pending" >&2; exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || [ -z "$missing" ]
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ -n "$optional" ]; then
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $optional >/dev/null ||
    echo "ljleak: could not install$optional; the tests that need it will be pending" >&2
fi
