# auth_oauth2_token_require $var ... [error=CODE]: every variable must be
# non-empty and not "0" once the token is active; directives add up.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $http = <<'CONF';
map $oauth2_token_client_id $trusted_client {
    default 0;
    web-app 1;
}
map $oauth2_token_scope $can_write {
    default 0;
    "~(^|\s)orders:write(\s|$)" 1;
}
CONF

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require $trusted_client;
    auth_oauth2_token_require $can_write error=403;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: every requirement holds: passes
--- idp
{"t": {"json": {"active": true, "client_id": "web-app", "scope": "orders:read orders:write"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 2: the first requirement fails: its default 401 with invalid_token
--- idp
{"t": {"json": {"active": true, "client_id": "other-app", "scope": "orders:write"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- backend_calls: 0
--- error_log
auth_oauth2_token: a required variable is empty or "0"

=== TEST 3: the second requirement fails: its error=403 with insufficient_scope
--- idp
{"t": {"json": {"active": true, "client_id": "web-app", "scope": "orders:read"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"
--- backend_calls: 0

=== TEST 4: several variables in one directive must all hold; an empty one fails
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require $trusted_client $http_x_tenant error=418;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true, "client_id": "web-app"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 418
--- response_headers
!WWW-Authenticate

=== TEST 5: an inactive token is 401 invalid_token before any requirement
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- idp_calls: 1

=== TEST 6: requirements are checked on cache hits too
--- http_config
map $oauth2_token_client_id $trusted_client {
    default 0;
    web-app 1;
}
map $oauth2_token_scope $can_write {
    default 0;
    "~(^|\s)orders:write(\s|$)" 1;
}
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "client_id": "other-app", "scope": "orders:write"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 401
--- idp_calls: 1

=== TEST 7: a server-level requirement applies to its locations, together with theirs
--- config
auth_oauth2_token_require $trusted_client;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require $can_write error=403;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true, "client_id": "other-app", "scope": "orders:write"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401

=== TEST 8: error codes outside 400-599, 444 and 499 fail nginx -t
--- config
location / { auth_oauth2_token_require $trusted_client error=444; }
--- must_die
--- error_log
"auth_oauth2_token_require" directive has an invalid error code "error=444": it must be 400-599, excluding 444 and 499

=== TEST 9: a requirement without a variable fails nginx -t
--- config
location / { auth_oauth2_token_require error=403; }
--- must_die
--- error_log
"auth_oauth2_token_require" directive needs at least one variable

=== TEST 10: another error code has no challenge; $oauth2_token_error says access_denied
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require $trusted_client error=429;
    add_header X-Error $oauth2_token_error always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true, "client_id": "other-app"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 429
--- response_headers
!WWW-Authenticate
X-Error: access_denied
--- backend_calls: 0
