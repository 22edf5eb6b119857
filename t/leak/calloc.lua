-- calloc(10, 12) dropped: 120 bytes lost in leak_calloc.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_calloc(10, 12)
