# A handler that kills its own nginx (SIGKILL: no exit handler runs), then a block that runs on.
use FindBin;
use lib $FindBin::Bin;
use TestNginxLike;

run_tests();

__DATA__

=== TEST 1: nginx killed
--- config
    location = /t {
        content_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "int kill(int, int); int getpid(void);"
            ffi.C.kill(ffi.C.getpid(), 9)
        }
    }
--- request
GET /t
--- error_code: 502



=== TEST 2: after it
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
