-- A block held by a C library's global: reachable, not a leak.
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.hold_in_global(555)
