# A clean handler, then one that loses 100 bytes per request through the FFI.
use FindBin;
use lib $FindBin::Bin;
use TestNginxLike;

run_tests();

__DATA__

=== TEST 1: clean handler
--- config
    location = /clean {
        content_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "void *malloc(size_t); void free(void *);"
            local p = ffi.C.malloc(100)
            ffi.C.free(p)
            ngx.say("clean")
        }
    }
--- request
GET /clean
--- response_body
clean



=== TEST 2: leaky handler
--- config
    location = /leak {
        content_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "void *malloc(size_t);"
            local p = ffi.C.malloc(100)
            ngx.say("lost ", p ~= nil)
        }
    }
--- request eval
["GET /leak", "GET /leak", "GET /leak"]
--- response_body eval
["lost true\n", "lost true\n", "lost true\n"]
