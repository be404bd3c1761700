# Under load: 200 concurrent clients on one worker, the IdP answering each
# introspection in 50 ms, no cache: every request is checked and none fails.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

run_tests();

__DATA__

=== TEST 1: 200 concurrent clients, IdP at 50 ms, one worker
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_set_header X-Sub $oauth2_token_sub;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- idp
{"t": {"delay": 0.05, "json": {"active": true, "sub": "alice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- concurrent: 200
--- timeout: 30
--- error_code: 200
--- idp_calls: 200
--- backend_calls: 200
--- backend_headers
X-Sub: alice
--- no_error_log
[error]
[alert]
[crit]
