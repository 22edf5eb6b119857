# A leak in each phase that runs Lua: each its own size, so each record is told apart.
use FindBin;
use lib $FindBin::Bin;
use TestNginxLike;

run_tests();

__DATA__

=== TEST 1: init_by_lua
--- http_config
    init_by_lua_block {
        local ffi = require "ffi"
        ffi.cdef "void *malloc(size_t);"
        lost_at_init = ffi.C.malloc(11)
        lost_at_init = nil
    }
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok



=== TEST 2: init_worker_by_lua
--- http_config
    init_worker_by_lua_block {
        local ffi = require "ffi"
        ffi.cdef "void *malloc(size_t);"
        ffi.C.malloc(22)
    }
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok



=== TEST 3: access_by_lua and log_by_lua
--- config
    location = /t {
        access_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "void *malloc(size_t);"
            ffi.C.malloc(33)
        }
        content_by_lua_block { ngx.say("ok") }
        log_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "void *malloc(size_t);"
            ffi.C.malloc(44)
        }
    }
--- request
GET /t
--- response_body
ok



=== TEST 4: a timer
--- config
    location = /t {
        content_by_lua_block {
            local ffi = require "ffi"
            ffi.cdef "void *malloc(size_t);"
            local ok = ngx.timer.at(0, function()
                ffi.C.malloc(55)
            end)
            ngx.say("timer ", ok ~= nil)
        }
    }
--- request
GET /t
--- response_body
timer true
--- wait: 0.2



=== TEST 5: content_by_lua_file
--- config
    location = /t {
        content_by_lua_file html/leak.lua;
    }
--- user_files
>>> leak.lua
local ffi = require "ffi"
ffi.cdef "void *malloc(size_t);"
ffi.C.malloc(66)
ngx.say("file")
--- request
GET /t
--- response_body
file
