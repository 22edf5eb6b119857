-- A 4 MiB block (above glibc's mmap threshold), dropped.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_big()
