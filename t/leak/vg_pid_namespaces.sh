#!/bin/sh
# For --engine=valgrind: two luajit processes, each pid 1 of a PID namespace of its own, at the same
# time: 100 bytes lost in one, 12 in the other. Needs unshare(1) and the right to use it (root).
here=$(dirname "$0")
unshare --pid --fork luajit "$here/malloc_dropped.lua" &
unshare --pid --fork luajit "$here/strdup.lua" &
wait
