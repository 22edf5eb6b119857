-- 2000 blocks of 48 bytes linked through their first word, and a 4 MiB block (mmapped by glibc),
-- all held from a C global: reachable, none lost. (A first word is no stale free-list link of
-- glibc's: t/unit/classify.c checks that apart, for any address.)
-- expect: exit 0; total definite 0 0; total indirect 0 0; total possible 0 0
-- expect: blocks reachable hold_first_word_chain 2001
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.hold_first_word_chain(2000)
