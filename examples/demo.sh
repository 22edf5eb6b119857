#!/bin/sh
# `make demo`: run ljleak on the bundled example and show its report.
cd "$(dirname "$0")/.."
echo >&2 "$ ./bin/ljleak run --json=build/demo.json -- luajit examples/app.lua"
set +e
./bin/ljleak run --json=build/demo.json -- luajit examples/app.lua
code=$?
set -e
echo >&2
echo >&2 "ljleak exited with $code (42: definite leaks found, as expected); JSON report: build/demo.json"
[ "$code" -eq 42 ]
