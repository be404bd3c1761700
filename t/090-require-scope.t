# auth_oauth2_token_require_scope: every listed scope must be in the token's
# space-separated `scope`, else 403 insufficient_scope naming what is needed.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_scope orders:read orders:write;
    proxy_pass http://backend;
}
location /open-scopes/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: all required scopes present, in any order, among others
--- idp
{"t": {"json": {"active": true, "scope": "openid orders:write profile orders:read"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_calls: 1

=== TEST 2: one scope missing is 403 with the challenge naming the required scopes
--- idp
{"t": {"json": {"active": true, "scope": "openid orders:read"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope", scope="orders:read orders:write"
--- backend_calls: 0
--- error_log
auth_oauth2_token: token lacks a required scope

=== TEST 3: no scope claim at all is 403
--- idp
{"t": {"json": {"active": true, "sub": "alice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- backend_calls: 0

=== TEST 4: matching is exact and case-sensitive
--- idp
{"t": {"json": {"active": true, "scope": "Orders:Read orders:write orders:readonly"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 403

=== TEST 5: a location without required scopes accepts the same token
--- idp
{"t": {"json": {"active": true, "scope": "openid"}}}
--- request
GET /open-scopes/x
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 6: scopes are enforced on cache hits too
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "scope": "orders:read"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 403
--- idp_calls: 1
--- backend_calls: 0

=== TEST 7: an inactive token is still 401, not 403
--- idp
{"t": {"json": {"active": false, "scope": "orders:read orders:write"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401

=== TEST 8: a scope with a quote fails nginx -t
--- config
location / {
    auth_oauth2_token_require_scope 'a"b';
}
--- must_die
--- error_log
"auth_oauth2_token_require_scope" directive has an invalid scope "a"b"

=== TEST 9: required scopes with exchange only fail nginx -t: nothing could enforce them
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_scope orders:read;
}
--- must_die
--- error_log
"auth_oauth2_token_require_scope" needs "auth_oauth2_token_introspect on"
