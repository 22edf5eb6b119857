#!/bin/sh
# For --engine=valgrind, with TMPDIR a folder of its own: the run directory gets good report files
# (this shell's, a luajit's that leaks 100 bytes), one cut short (a luajit killed before Valgrind
# finished it) and one that two processes wrote: once this shell's own report is complete, a
# helper appends a whole second report to it (process 4242's, t/valgrind/errors.xml), as a process
# with the same pid in another PID namespace would have.
here=$(dirname "$0")
luajit "$here/malloc_dropped.lua"
VG_ERRORS_KILL=1 luajit "$here/vg_errors.lua"
for own in "$TMPDIR"/ljleak.*/vg.$$."$LJLEAK_VG_ID".xml; do :; done
(
  n=0
  until grep -q '</valgrindoutput>' "$own" || [ $n -ge 100 ]; do sleep 0.2; n=$((n + 1)); done
  cat "$here/../valgrind/errors.xml" >> "$own"
) &
