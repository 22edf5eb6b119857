-- Records of every kind, for the order of the text report (t/text_spec.lua): a 32-byte definite
-- block holding a 48-byte indirect one, a 16-byte definite one, a possible 64-byte one and a
-- reachable 555-byte one.
-- expect: exit 42; total definite 2 48; total indirect 1 48; total possible 1 64
-- expect: one reachable hold_in_global bytes=555; one definite leak_malloc bytes=16
local leaky = dofile((arg[0]:match("^(.-)[^/]+$")) .. "leaky.lua")
leaky.leak_malloc(16)
leaky.leak_chain()
leaky.leak_interior(64)
leaky.hold_in_global(555)
