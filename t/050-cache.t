# The shared-memory introspection cache, proven by the IdP's call count.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    add_header X-Cache $oauth2_token_cache_status always;
    add_header X-Sub $oauth2_token_sub always;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: the first request misses and asks the IdP
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "sub": "alice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- response_headers
X-Cache: MISS
X-Sub: alice
--- idp_calls: 1

=== TEST 2: five requests with one token make one IdP call
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "sub": "alice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 5
--- error_code: 200
--- response_headers
X-Sub: alice
--- idp_calls: 1
--- backend_calls: 5

=== TEST 3: an inactive token asks the IdP every time by default
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 401
--- idp_calls: 3

=== TEST 4: with negative_ttl an inactive token is cached too
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m negative_ttl=30s;
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 401
--- idp_calls: 1

=== TEST 5: IdP errors are never cached
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m negative_ttl=30s;
--- idp
{"t": {"status": 500, "body": "boom"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 502
--- idp_calls: 3

=== TEST 6: max_ttl=0 bypasses the cache
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=0;
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- response_headers
X-Cache: BYPASS
--- idp_calls: 3

=== TEST 7: an exp already past is not cached
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "exp": 1000000000}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- response_headers
X-Cache: MISS
--- idp_calls: 3

=== TEST 8: without a cache the variable is empty
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- response_headers
!X-Cache

=== TEST 9: 20 concurrent requests for one new token make one IdP call
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"delay": 0.5, "json": {"active": true, "sub": "alice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- concurrent: 20
--- error_code: 200
--- idp_calls: 1
--- backend_calls: 20

=== TEST 10: 10 concurrent requests for one inactive token share one answer
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"delay": 0.5, "json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- concurrent: 10
--- error_code: 401
--- idp_calls: 1

=== TEST 11: one zone name with two sizes fails nginx -t
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- config
location /a { auth_oauth2_token_introspect_cache zone=tokens:2m; }
--- must_die
--- error_log
conflicts with already declared size

=== TEST 12: a zone below the minimum fails nginx -t naming the directive
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:4k;
--- config
location / { return 200; }
--- must_die
--- error_log
"auth_oauth2_token_introspect_cache" directive zone "tokens" is too small

=== TEST 13: unknown parameters fail nginx -t
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m ttl=5s;
--- config
location / { return 200; }
--- must_die
--- error_log
"auth_oauth2_token_introspect_cache" directive has an unknown parameter "ttl=5s"

=== TEST 14: a zone name used for another purpose is refused
--- http_config
limit_req_zone $binary_remote_addr zone=tokens:1m rate=1r/s;
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- config
location / { return 200; }
--- must_die
--- error_log
is already declared for a different use
