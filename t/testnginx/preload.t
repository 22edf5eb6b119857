# A function of a library that TEST_NGINX_LD_PRELOAD puts into nginx (Test::Nginx writes it on
# nginx's command line, after valgrind's options), which loses what it allocates.
use FindBin;
use lib $FindBin::Bin;
use TestNginxLike;

run_tests();

__DATA__

=== TEST 1: a preloaded library's leak
--- config
    location = /t {
        content_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "void leak_malloc(size_t);"
            ffi.C.leak_malloc(77)
            ngx.say("called")
        }
    }
--- request
GET /t
--- response_body
called
