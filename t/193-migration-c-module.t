# Issue 29 item 3: docs/MIGRATION.md, section 1 ("From the C module of the same
# name"), row by row: what this module does in each situation its table and
# its exceptions name, with a configuration a C-module user has (the
# directives and the map + require pattern the C module's documentation
# suggests). Each block's title names the row it checks (t/194 keeps the
# guide's rows and these titles in step).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

# The C module's documented pattern: claim_set + map + require, the audience
# refused with the default 401, the scope with error=403.
my $http = <<'CONF';
auth_oauth2_token_client_id          gw;
auth_oauth2_token_client_secret      s3cret;
auth_oauth2_token_claim_set $token_aud aud;
map $token_aud $aud_ok {
    default                 0;
    https://api.example.com 1;
}
map $oauth2_token_scope $has_orders_read {
    default                  0;
    "~(^| )orders:read( |$)" 1;
}
map $oauth2_token_scope $has_orders_write {
    default                   0;
    "~(^| )orders:write( |$)" 1;
}
# MIGRATION.md's replacement for `limit_except GET { auth_oauth2_token_require ... }`.
map $request_method $is_write { GET 0; HEAD 0; default 1; }
map "$is_write:$has_orders_write" $write_allowed { "~^0:" 1; "1:1" 1; default 0; }
CONF

my $config = <<'CONF';
location /orders/ {
    auth_oauth2_token_introspect          on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_require $aud_ok;
    auth_oauth2_token_require $has_orders_read error=403;
    auth_oauth2_token_require $write_allowed error=403;
    proxy_set_header X-User $oauth2_token_sub;
    proxy_pass http://backend;
}
location /exchanged/ {
    auth_oauth2_token_exchange       on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_audience       orders-api;
    proxy_pass http://backend;
}
location /app/ {
    auth_request /check;
    proxy_pass http://backend;
}
location = /check {
    internal;
    auth_oauth2_token_introspect          on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    try_files /nonexistent =204;
}
location = /_introspect { internal; proxy_read_timeout 1s; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_read_timeout 1s; proxy_pass http://idp/token; }
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: row [no Authorization header]: 401, Bearer realm="api" without error, the IdP not asked
--- request
GET /orders/1
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0
--- backend_calls: 0

=== TEST 2: row [or another scheme]: the same for Basic
--- request
GET /orders/1
--- more_headers
Authorization: Basic Z3c6czNjcmV0
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0

=== TEST 3: row [Bearer with characters outside RFC 6750's b64token]: 401 invalid_token with a description, the IdP not asked
--- request
GET /orders/1
--- more_headers
Authorization: Bearer tok,en
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer realm="api", error="invalid_token", error_description="[^"]+"$
--- idp_calls: 0
--- backend_calls: 0

=== TEST 4: row ["active": false]: 401, Bearer realm="api", error="invalid_token"
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- backend_calls: 0

=== TEST 5: the C module's configuration means the same here: audience and scope held, the request passes with the claims
--- idp
{"t": {"json": {"active": true, "sub": "alice", "aud": "https://api.example.com", "scope": "orders:read"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
X-User: alice

=== TEST 6: row [an auth_oauth2_token_require refusal]: the default 401 carries error="invalid_token"
--- idp
{"t": {"json": {"active": true, "aud": "https://other.example.com", "scope": "orders:read"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- backend_calls: 0

=== TEST 7: row [an auth_oauth2_token_require refusal]: error=403 carries error="insufficient_scope"
--- idp
{"t": {"json": {"active": true, "aud": "https://api.example.com", "scope": "profile"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"
--- backend_calls: 0

=== TEST 8: row [an auth_oauth2_token_require refusal]: another code is kept, without a challenge
--- config
location /orders/ {
    auth_oauth2_token_introspect          on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_require $aud_ok error=418;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true, "aud": "https://other.example.com"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 418
--- response_headers
!WWW-Authenticate

=== TEST 9: exception [require inside limit_except]: the map that replaces it lets a GET through without the write scope
--- idp
{"t": {"json": {"active": true, "aud": "https://api.example.com", "scope": "orders:read"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 10: exception [require inside limit_except]: ... and refuses a POST without it (403)
--- idp
{"t": {"json": {"active": true, "aud": "https://api.example.com", "scope": "orders:read"}}}
--- request
POST /orders/1

x=1
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- backend_calls: 0

=== TEST 11: exception [require inside limit_except]: ... and lets a POST with it through
--- idp
{"t": {"json": {"active": true, "aud": "https://api.example.com", "scope": "orders:read orders:write"}}}
--- request
POST /orders/1

x=1
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 12: row [the IdP answers anything but 200, something unreadable, or not in time]: 502
--- idp
{"t": {"status": 500, "json": {"error": "server_error"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 13: row [the IdP answers anything but 200, something unreadable, or not in time]: 502
--- idp
{"t": {"body": "<html>maintenance</html>", "content_type": "text/html"}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 14: row [the IdP answers anything but 200, something unreadable, or not in time]: 503 when it answered 503
--- idp
{"t": {"status": 503, "body": "busy"}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 503

=== TEST 15: row [the IdP answers anything but 200, something unreadable, or not in time]: 504
--- idp
{"t": {"mode": "hang"}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 504

=== TEST 16: row [the token exchange fails]: invalid_grant is 401
--- idp
{"t": {"status": 400, "json": {"error": "invalid_grant"}}}
--- request
GET /exchanged/1
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- backend_calls: 0

=== TEST 17: row [the token exchange fails]: invalid_target is 403
--- idp
{"t": {"status": 400, "json": {"error": "invalid_target"}}}
--- request
GET /exchanged/1
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"

=== TEST 18: row [the token exchange fails]: invalid_scope is 403
--- idp
{"t": {"status": 400, "json": {"error": "invalid_scope"}}}
--- request
GET /exchanged/1
--- more_headers
Authorization: Bearer t
--- error_code: 403

=== TEST 19: row [the token exchange fails]: another error is 502
--- idp
{"t": {"status": 500, "json": {"error": "server_error"}}}
--- request
GET /exchanged/1
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 20: row [the token exchange fails]: no answer in time is 504
--- idp
{"t": {"mode": "hang"}}
--- request
GET /exchanged/1
--- more_headers
Authorization: Bearer t
--- error_code: 504

=== TEST 21: row [the exchange's answer lacks issued_token_type]: 502 (the C module passes it)
--- idp
{"t": {"json": {"access_token": "narrow", "token_type": "Bearer"}}}
--- request
GET /exchanged/1
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: token endpoint response lacks issued_token_type

=== TEST 22: exception [issued_token_type]: a token_type other than Bearer passes, and the upstream gets Bearer
--- idp
{"t": {"json": {"access_token": "narrow", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "N_A"}}}
--- request
GET /exchanged/1
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
Authorization: Bearer narrow

=== TEST 23: row [the protected location is reached through an auth_request, SSI or mirror subrequest]: checked (the C module skips subrequests)
--- request
GET /app/1
--- error_code: 401
--- idp_calls: 0
--- backend_calls: 0

=== TEST 24: row [the protected location is reached through an auth_request, SSI or mirror subrequest]: an active token passes
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /app/1
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_calls: 1

=== TEST 25: exception [www_authenticate that expands to nothing]: no header, as in the C module
--- http_config
auth_oauth2_token_client_id gw;
map $arg_mcp $challenge { default ""; 1 'Bearer resource_metadata="https://rs.example/.well-known/oauth-protected-resource"'; }
--- config
location /orders/ {
    auth_oauth2_token_introspect          on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_www_authenticate    $challenge;
    proxy_pass http://backend;
}
--- request
GET /orders/1
--- error_code: 401
--- response_headers
!WWW-Authenticate

=== TEST 26: exception [www_authenticate]: the same map's other value is the whole challenge
--- http_config
auth_oauth2_token_client_id gw;
map $arg_mcp $challenge { default ""; 1 'Bearer resource_metadata="https://rs.example/.well-known/oauth-protected-resource"'; }
--- config
location /orders/ {
    auth_oauth2_token_introspect          on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_www_authenticate    $challenge;
    proxy_pass http://backend;
}
--- request
GET /orders/1?mcp=1
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer resource_metadata="https://rs.example/.well-known/oauth-protected-resource"

=== TEST 27: operator [credentials at any level]: a client id per server block
--- http_config
--- config
auth_oauth2_token_client_id     per-server;
auth_oauth2_token_client_secret s;
location /orders/ {
    auth_oauth2_token_introspect          on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
header Authorization: Basic cGVyLXNlcnZlcjpz
