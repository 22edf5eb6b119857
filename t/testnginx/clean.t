# A suite that loses nothing: lua-resty-core's FFI API, lua-resty-lrucache, a shared dict, timers,
# coroutines, cosockets to the server itself, per request and at init; a regex location and
# ngx.re (nginx's own regex code).
use FindBin;
use lib $FindBin::Bin;
use TestNginxLike;

repeat_each(2);

run_tests();

__DATA__

=== TEST 1: lrucache and resty.core at init and per request
--- http_config
    lua_shared_dict dogs 1m;
    init_by_lua_block {
        require "resty.core"
        local lrucache = require "resty.lrucache"
        cache = assert(lrucache.new(16))
        cache:set("warm", {1, 2, 3})
    }
--- config
    location = /t {
        content_by_lua_block {
            local lrucache = require "resty.lrucache"
            local c = lrucache.new(8)
            for i = 1, 20 do c:set("k" .. i, ("v"):rep(i)) end
            cache:set(ngx.var.uri, ngx.now())
            local dogs = ngx.shared.dogs
            dogs:set("a", ngx.var.uri)
            dogs:incr("n", 1, 0)
            ngx.say(c:get("k20"):len(), " ", #cache:get("warm"), " ", dogs:get("a"))
        }
    }
--- request
GET /t
--- response_body
20 3 /t



=== TEST 2: resty.core string and time functions, ngx.ctx, headers
--- config
    location = /t {
        content_by_lua_block {
            local s = ngx.encode_base64("hello")
            ngx.ctx.x = ngx.md5(s) .. ngx.sha1_bin(s):len()
            ngx.header["X-Test"] = ngx.escape_uri("a b")
            local h = ngx.req.get_headers()
            ngx.say(ngx.decode_base64(s), " ", #ngx.ctx.x, " ", h.host, " ", ngx.http_time(0))
        }
    }
--- request
GET /t
--- response_body
hello 34 localhost Thu, 01 Jan 1970 00:00:00 GMT



=== TEST 3: timers, coroutines, init_worker
--- http_config
    init_worker_by_lua_block {
        ngx.timer.at(0, function() local t = {} for i = 1, 100 do t[i] = i end end)
    }
--- config
    location = /t {
        content_by_lua_block {
            local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
            local _, x = coroutine.resume(co, 1)
            local _, y = coroutine.resume(co, 10)
            local ok = ngx.timer.at(0, function(premature) ngx.log(ngx.INFO, "timer ", premature) end)
            ngx.say(x, " ", y, " ", ok ~= nil)
        }
    }
--- request
GET /t
--- response_body
2 20 true
--- wait: 0.1



=== TEST 4: a cosocket and a subrequest to itself
--- config
    location = /sub {
        content_by_lua_block { ngx.print("sub") }
    }
    location = /t {
        content_by_lua_block {
            local sock = ngx.socket.tcp()
            assert(sock:connect("127.0.0.1", ngx.var.server_port))
            assert(sock:send("GET /sub HTTP/1.0\r\nHost: localhost\r\n\r\n"))
            local line = sock:receive("*l")
            sock:close()
            local res = ngx.location.capture("/sub")
            ngx.say(line, " ", res.body)
        }
    }
--- request
GET /t
--- response_body
HTTP/1.1 200 OK sub



=== TEST 5: a regex location, its captures, and ngx.re
--- config
    location ~ ^/re/(\w+)$ {
        content_by_lua_block {
            local m = ngx.re.match(ngx.var[1], [[^(\w)(\w*)$]], "jo")
            local s = ngx.re.gsub(ngx.var.uri, "[aeiou]", "_", "jo")
            ngx.say(m[1], " ", m[2], " ", s)
        }
    }
--- request
GET /re/hello
--- response_body
h ello /r_/h_ll_
