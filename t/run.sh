#!/bin/sh
# `make test`: lint, the busted specs, then the project's own suite under its own tracker.
set -eu
cd "$(dirname "$0")/.."
BUSTED="luajit /usr/bin/busted"
echo "== luacheck"
luacheck -q lua bin t bench examples
echo "== busted specs"
$BUSTED -o TAP t/cli_spec.lua t/leak_spec.lua t/api_spec.lua t/busted_spec.lua
echo "== luarocks install"
sh t/rock.sh
echo "== self-check: the CLI's own specs under ljleak's tracker"
./bin/ljleak run --fail-on=definite,indirect,possible -- $BUSTED -o TAP t/cli_spec.lua
