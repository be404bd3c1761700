# RFC 8693 token exchange: the three modes, what the token endpoint receives,
# what the upstream receives, every error row, and the exchange cache.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $issued = '"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"';

# Exchange only, the default for blocks without a config.
my $config = <<'CONF';
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    auth_oauth2_token_audience orders-api;
    add_header X-New-Type $oauth2_token_new_token_type always;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_set_header X-New-Token $oauth2_token_new_token;
    proxy_pass http://backend;
}
location = /_token {
    internal;
    proxy_read_timeout 1s;
    proxy_pass http://idp/token;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: exchange only: the token endpoint gets the RFC 8693 form, the upstream the new token
--- idp
{"client-tok": {"json": {"access_token": "new-tok.abc", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 60}}}
--- request
GET /orders
--- more_headers
Authorization: Bearer client-tok
Cookie: c=1
--- error_code: 200
--- response_headers
X-New-Type: Bearer
--- idp_calls: 1
--- idp_request
method: POST
path: /token
header Content-Type: application/x-www-form-urlencoded
header Authorization: Basic Z3c6czNjcmV0
!header Cookie
body: grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=client-tok&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&audience=orders-api
--- backend_headers
Authorization: Bearer new-tok.abc
Authorization*: 1
X-New-Token: new-tok.abc
Cookie: c=1

=== TEST 2: scope, resource and requested_token_type are sent when set; audience from a variable
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_audience $arg_aud;
    auth_oauth2_token_scope "orders:read orders:write";
    auth_oauth2_token_resource https://orders.example/;
    auth_oauth2_token_requested_token_type urn:ietf:params:oauth:token-type:jwt;
    proxy_pass http://backend;
}
location = /_token {
    internal;
    proxy_pass http://idp/token;
}
--- idp
{"t": {"json": {"access_token": "x", "issued_token_type": "urn:ietf:params:oauth:token-type:jwt"}}}
--- request
GET /?aud=billing-api
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
body_like: &audience=billing-api&scope=orders%3Aread\+orders%3Awrite&resource=https%3A%2F%2Forders\.example%2F&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt$
--- backend_headers
Authorization: Bearer x

=== TEST 3: introspect then exchange: an active token is exchanged
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_audience orders-api;
    proxy_set_header X-Sub $oauth2_token_sub;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_pass http://idp/token; }
--- idp
{"/introspect t": {"json": {"active": true, "sub": "alice"}},
 "/token t": {"json": {"access_token": "narrow", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_calls: 2
--- idp_request
path: /token
body_like: subject_token=t&
--- backend_headers
Authorization: Bearer narrow
X-Sub: alice

=== TEST 4: introspect then exchange: an inactive token never reaches the token endpoint
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_pass http://idp/token; }
--- idp
{"/introspect t": {"json": {"active": false}},
 "/token t": {"json": {"access_token": "narrow", "issued_token_type": "x"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- idp_calls: 1
--- idp_request
path: /introspect
--- backend_calls: 0

=== TEST 5: a lower-case authorization header is replaced, not duplicated; 40 other headers pass untouched
--- idp
{"t": {"json": {"access_token": "swapped", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}}}
--- request
GET /
--- more_headers
authorization: Bearer t
X-H01: 1
X-H02: 2
X-H03: 3
X-H04: 4
X-H05: 5
X-H06: 6
X-H07: 7
X-H08: 8
X-H09: 9
X-H10: 10
X-H11: 11
X-H12: 12
X-H13: 13
X-H14: 14
X-H15: 15
X-H16: 16
X-H17: 17
X-H18: 18
X-H19: 19
X-H20: 20
X-H21: 21
X-H22: 22
X-H23: 23
X-H24: 24
X-H25: 25
X-H26: 26
X-H27: 27
X-H28: 28
X-H29: 29
X-H30: 30
X-H31: 31
X-H32: 32
X-H33: 33
X-H34: 34
X-H35: 35
X-H36: 36
X-H37: 37
X-H38: 38
X-H39: 39
X-H40: 40
--- error_code: 200
--- backend_headers
Authorization: Bearer swapped
Authorization*: 1
X-H01: 1
X-H20: 20
X-H21: 21
X-H39: 39
X-H40: 40

=== TEST 6: the original token never reaches the backend
--- idp
{"original-secret-token": {"json": {"access_token": "replacement", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}}}
--- request
GET /
--- more_headers
Authorization: Bearer original-secret-token
--- error_code: 200
--- response_body_like: ^(?!.*original-secret-token).*replacement

=== TEST 7: invalid_grant is 401 invalid_token
--- idp
{"t": {"status": 400, "json": {"error": "invalid_grant", "error_description": "expired"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- backend_calls: 0
--- error_log
auth_oauth2_token: token exchange refused the subject token (invalid_grant)

=== TEST 8: invalid_target is 403 insufficient_scope
--- idp
{"t": {"status": 400, "json": {"error": "invalid_target"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"
--- backend_calls: 0
--- error_log
auth_oauth2_token: token exchange refused the requested target or scope (invalid_target)

=== TEST 9: invalid_scope is 403 insufficient_scope
--- idp
{"t": {"status": 400, "json": {"error": "invalid_scope"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- backend_calls: 0

=== TEST 10: any other OAuth error is 502, logged with its code
--- idp
{"t": {"status": 401, "json": {"error": "invalid_client"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: token endpoint answered 401 (invalid_client)

=== TEST 11: a 200 without access_token is 502
--- idp
{"t": {"json": {"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: token endpoint response lacks access_token

=== TEST 12: a 200 without issued_token_type is 502
--- idp
{"t": {"json": {"access_token": "abc"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- error_log
auth_oauth2_token: token endpoint response lacks issued_token_type

=== TEST 13: a token endpoint that times out is 504
--- idp
{"t": {"mode": "hang"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 504
--- backend_calls: 0
--- error_log
auth_oauth2_token: token endpoint timed out

=== TEST 14: without a cache every request is exchanged
--- idp
{"t": {"json": {"access_token": "n", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- idp_calls: 3

=== TEST 15: with a cache one exchange serves many requests, and the cache status reports it
--- http_config
auth_oauth2_token_exchange_cache zone=exchanged:1m;
--- idp
{"t": {"json": {"access_token": "cached-new", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "expires_in": 300}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- idp_calls: 1
--- backend_calls: 3
--- backend_headers
Authorization: Bearer cached-new
--- response_headers_like
X-Cache: ^(MISS|HIT)$

=== TEST 16: exchange on without a token endpoint fails nginx -t
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_client_id gw;
}
--- must_die
--- error_log
"auth_oauth2_token_exchange" is on but "auth_oauth2_token_token_endpoint" is not set

=== TEST 17: the exchange cache takes no negative_ttl
--- http_config
auth_oauth2_token_exchange_cache zone=exchanged:1m negative_ttl=5s;
--- config
location / { return 200; }
--- must_die
--- error_log
"auth_oauth2_token_exchange_cache" directive has an unknown parameter "negative_ttl=5s"

=== TEST 18: an audience with a broken variable reference fails nginx -t
--- config
location / {
    auth_oauth2_token_audience "${unclosed";
}
--- must_die
--- error_log
auth_oauth2_token_audience
