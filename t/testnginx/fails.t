# A block whose response is not what it expects (and that loses nothing): prove fails.
use FindBin;
use lib $FindBin::Bin;
use TestNginxLike;

run_tests();

__DATA__

=== TEST 1: wrong body
--- config
    location = /t {
        content_by_lua_block { ngx.say("actual") }
    }
--- request
GET /t
--- response_body
expected
