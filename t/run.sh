#!/bin/sh
# `make test`: lint, the C unit tests, the busted specs (installs with make and luarocks among
# them), the leak fixtures on the clang build, then the project's own suite under its own tracker,
# and a part of it under Valgrind. Ends with one line "N passed, M failed" (busted tests, plus one per other step).
cd "$(dirname "$0")/.."
BUSTED="luajit /usr/bin/busted"
SPECS="t/dag_spec.lua t/abi_spec.lua t/const_spec.lua t/unwind_spec.lua t/luawalk_spec.lua t/symbolize_spec.lua t/symcache_spec.lua t/cli_spec.lua t/outfile_spec.lua t/report_spec.lua t/leak_spec.lua t/api_spec.lua t/busted_spec.lua t/html_spec.lua
       t/supp_spec.lua t/hostile_spec.lua t/invisible_spec.lua t/baseline_spec.lua t/shards_spec.lua t/junit_spec.lua
       t/github_spec.lua"
# Runs Valgrind itself (not under the tracker: an outer tracker would be preloaded into it); and
# prove with perl and nginx (test-nginx, soak --url), which an outer tracker would check too.
VALGRIND_SPECS="t/engines_spec.lua t/valgrind_spec.lua t/busted_valgrind_spec.lua t/supp_run_spec.lua t/text_spec.lua
                t/progress_spec.lua t/testnginx_spec.lua t/growth_spec.lua"
# Builds and installs with make and luarocks (compilers leak by design: not under the tracker either).
INSTALL_SPECS="t/install_spec.lua"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0
failed=0

step() {  # step NAME COMMAND...: one pass or one failure
  name=$1
  shift
  echo "== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

step "luacheck" luacheck -q lua t bench examples
for t in vm_layout table stopped intern classify unwind; do step "C unit tests: $t" "build/unit/$t"; done

echo "== busted specs"
$BUSTED -o TAP $SPECS $VALGRIND_SPECS $INSTALL_SPECS | tee "$log"
ok=$(grep -c '^ok ' "$log")
notok=$(grep -c '^not ok ' "$log")
passed=$((passed + ok))
failed=$((failed + notok))
[ "$ok" -gt 0 ] || { echo "FAILED: no busted test ran"; failed=$((failed + 1)); }

step "gcc x clang: every leak fixture under the tracker that clang built (make clang)" \
  env LJLEAK_TEST_BUILD=build/clang LJLEAK_TEST_ENGINES=tracker $BUSTED t/engines_spec.lua
# shellcheck disable=SC2086
step "self-check: the whole suite under ljleak's tracker, nothing lost" \
  ./bin/ljleak run --fail-on=definite,indirect,possible -- $BUSTED -o TAP $SPECS
step "self-check: the suppression specs under Valgrind, no record left" \
  ./bin/ljleak run --engine=valgrind --fail-on=definite,indirect,possible,reachable -- $BUSTED -o TAP t/supp_spec.lua

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
