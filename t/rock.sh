#!/bin/sh
# Installs ljleak with luarocks into a temporary tree (offline: dependencies come from Debian)
# and runs the installed command on a leaky fixture: it must find the 123-byte leak.
set -eu
cd "$(dirname "$0")/.."
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
luarocks make --tree "$tree" rockspec/ljleak-scm-1.rockspec >"$tree/install.log" 2>&1 ||
  { cat "$tree/install.log" >&2; exit 1; }
set +e
(cd "$tree" && "$tree/bin/ljleak" run --json="$tree/r.json" -- luajit "$OLDPWD/t/leak/ffi_load.lua" 2>/dev/null)
code=$?
set -e
[ "$code" -eq 42 ] || { echo "installed ljleak exited with $code, expected 42" >&2; exit 1; }
grep -q '"function": "leak_malloc"' "$tree/r.json" || { echo "installed ljleak: leak_malloc not in the report" >&2; exit 1; }
echo "ok - luarocks make installs a working ljleak (found leak_malloc, exit 42)"
