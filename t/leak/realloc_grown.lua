-- A block grown by realloc to 4000 bytes, then dropped: one block, attributed to realloc.
-- expect: total definite 1 4000; one definite leak_realloc_grown alloc=realloc
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_realloc_grown()
