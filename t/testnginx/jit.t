# A handler whose loop runs long enough for LuaJIT to compile it, and loses a block per iteration.
use FindBin;
use lib $FindBin::Bin;
use TestNginxLike;

run_tests();

__DATA__

=== TEST 1: JIT-hot loop
--- config
    location = /jit {
        content_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "void *malloc(size_t);"
            local n = 0
            for i = 1, 500 do
                if ffi.C.malloc(24) ~= nil then n = n + 1 end
            end
            ngx.say(n)
        }
    }
--- request
GET /jit
--- response_body
500
