# Issue 29 item 3: docs/MIGRATION.md, sections 3 ("From the auth_request +
# proxy_cache recipe") and 4 ("From NGINX's njs introspection example"), row
# by row: what this module does in each situation of their "What changes for
# the client" tables, with the guide's "after" configurations (hosts pointed
# at the test IdP and backend). Titles name the section and the row (t/194
# keeps the guide's rows and these titles in step).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use Time::HiRes qw(sleep);

my $http = <<'CONF';
auth_oauth2_token_client_id          api-gateway;
auth_oauth2_token_client_secret      example-secret;
auth_oauth2_token_introspect_endpoint /_oauth2_token_introspection;
auth_oauth2_token_introspect_cache    zone=token_answers:1m max_ttl=1s;
auth_oauth2_token_claim_set $token_username username;
CONF

my $config = <<'CONF';
location /api/ {
    auth_oauth2_token_introspect on;
    proxy_set_header X-Username $token_username;
    proxy_set_header X-User     $oauth2_token_sub;
    proxy_pass http://backend;
}
location = /_oauth2_token_introspection {
    internal;
    proxy_read_timeout 1s;
    proxy_pass http://idp/introspect;
}
CONF

# Section 4, row "the IdP fails while a stale cached answer exists": the
# answer was cached (max_ttl=1s), its time is over, the IdP now fails: never a pass.
{
    idp_setup({ t => [ { json => { active => JSON::PP::true(), sub => 'alice' } },
                       { status => 500, body => 'down' } ] });
    start_nginx(block_from(name => 'stale', http_config => $http, config => $config)) or BAIL_OUT('nginx');
    my $get = sub { http_request({ method => 'GET', uri => '/api/x', headers => ['Authorization: Bearer t'] }) };
    is($get->()->{status}, 200, 'njs: row [the IdP fails while a stale cached answer exists]: the first answer passes');
    is($get->()->{status}, 200, 'njs: row [the IdP fails while a stale cached answer exists]: a cache hit passes');
    sleep 1.6;
    is($get->()->{status}, 502, 'njs: row [the IdP fails while a stale cached answer exists]: once the entry is past its time and the IdP fails: 502, not a pass');
    is(scalar @{ backend_requests() }, 2, 'njs: row [the IdP fails while a stale cached answer exists]: the backend got only the two checked requests');
    stop_nginx();
}

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: recipe: row ["active": false (revoked, expired, unknown token)]: 401 invalid_token, where the recipe passes
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- backend_calls: 0

=== TEST 2: recipe: row [no token]: 401 Bearer realm="api", the IdP not asked
--- request
GET /api/x
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0

=== TEST 3: recipe: row [a token containing +]: form-encoded for the IdP
--- idp
{"a+b/c=": {"json": {"active": true}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer a+b/c=
--- error_code: 200
--- idp_request
body_like: ^token=a%2Bb%2Fc%3D(&|$)

=== TEST 4: recipe: row [the IdP rejects the gateway's credentials (401/403)]: 502, logged as rejected credentials
--- idp
{"t": {"status": 401, "json": {"error": "invalid_client"}, "headers": {"WWW-Authenticate": "Basic realm=\"idp\""}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- response_headers
!WWW-Authenticate
--- error_log
client credentials rejected

=== TEST 5: recipe: row [the IdP rejects the gateway's credentials (401/403)]: 403 too
--- idp
{"t": {"status": 403, "body": "forbidden"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- error_log
client credentials rejected

=== TEST 6: recipe: row [the IdP fails (5xx), cannot be reached or times out]: a 5xx is 502
--- idp
{"t": {"status": 500, "body": "oops"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 7: recipe: row [the IdP fails (5xx), cannot be reached or times out]: 503 is 503
--- idp
{"t": {"status": 503, "body": "busy"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 503

=== TEST 8: recipe: row [the IdP fails (5xx), cannot be reached or times out]: unreachable is 502
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_oauth2_token_introspection {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_CLOSED_PORT/introspect;
}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 9: recipe: row [the IdP fails (5xx), cannot be reached or times out]: a timeout is 504
--- idp
{"t": {"mode": "hang"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 504

=== TEST 10: recipe: row [a valid token]: passes, with claims for proxy_set_header
--- idp
{"t": {"json": {"active": true, "sub": "alice", "username": "alice.smith"}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
X-User: alice
X-Username: alice.smith

=== TEST 11: njs: row [the IdP fails, cannot be reached, or answers something unreadable]: unreadable is 502
--- idp
{"t": {"body": "not json"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0

=== TEST 12: njs: row [the IdP fails, cannot be reached, or answers something unreadable]: 503 is 503
--- idp
{"t": {"status": 503, "body": "busy"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 503

=== TEST 13: njs: row [the IdP fails, cannot be reached, or answers something unreadable]: a timeout is 504
--- idp
{"t": {"mode": "hang"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 504

=== TEST 14: njs: row ["active": false]: 401 invalid_token
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"

=== TEST 15: njs: row [no token]: 401 Bearer realm="api", the IdP not asked
--- request
GET /api/x
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0

=== TEST 16: njs: row [any refusal]: the RFC 6750 challenge, also on a 403
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_scope orders:read;
    proxy_pass http://backend;
}
location = /_oauth2_token_introspection { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true, "scope": "profile"}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope", scope="orders:read"
