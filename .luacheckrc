-- luacheck configuration: LuaJIT's standard library and no globals, everywhere.
std = "luajit"
max_line_length = 120
include_files = {"**/*.lua", ".luacheckrc"}
exclude_files = {"build/**", "t/busted/broken_spec.lua"}  -- a spec that must not load

files[".luacheckrc"] = {std = "+luacheckrc"}
files["t/**/*_spec.lua"] = {std = "+busted"}
-- Leak fixtures leak on purpose: a pointer kept in a global (reachable) or dropped unused (lost).
files["t/leak"] = {globals = {"KEEP"}, ignore = {"211", "231", "241"}}
-- API fixtures drop and overwrite cdata on purpose, to make them garbage.
files["t/api"] = {ignore = {"211", "231", "241", "311"}}
files["t/busted"] = {ignore = {"211", "231", "241", "311"}}
