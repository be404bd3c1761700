# auth_oauth2_token_require_audience: the token's `aud` (a string or an array)
# must name one of the configured values (RFC 9068 §4); otherwise 401
# invalid_token with a description, from the IdP and from the cache alike.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $http = <<'CONF';
auth_oauth2_token_introspect_cache zone=tokens:1m;
CONF

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_audience https://orders.example orders-api;
    add_header X-Cache $oauth2_token_cache_status always;
    add_header X-Error $oauth2_token_error always;
    proxy_pass http://backend;
}
location /billing/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_audience billing-api;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: aud as a string naming one of the values
--- idp
{"t": {"json": {"active": true, "sub": "alice", "aud": "orders-api"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 2: aud as an array containing one of the values, then from the cache
--- idp
{"t": {"json": {"active": true, "aud": ["other", "https://orders.example"]}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 2
--- error_code: 200
--- idp_calls: 1

=== TEST 3: another audience is refused with invalid_token and a description, also on cache hits
--- idp
{"t": {"json": {"active": true, "aud": ["billing-api"]}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 2
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token", error_description="the token is not meant for this resource"
X-Error: invalid_token
--- idp_calls: 1
--- backend_calls: 0
--- error_log
token is not meant for this audience

=== TEST 4: the same cached token passes where its audience is accepted
--- idp
{"t": {"json": {"active": true, "aud": "billing-api"}}}
--- request
GET /billing/x
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 5: a token without aud is refused
--- idp
{"t": {"json": {"active": true, "sub": "alice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers_like
WWW-Authenticate: error="invalid_token"
--- backend_calls: 0

=== TEST 6: values compare exactly (case, no prefix match), and a non-string aud never matches
--- idp
{"t": {"json": {"active": true, "aud": ["Orders-API", "orders-api-v2", 1, {"orders-api": true}]}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401

=== TEST 7: needs introspection
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_t;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_audience orders-api;
}
--- must_die
--- error_log
"auth_oauth2_token_require_audience" needs "auth_oauth2_token_introspect on"

=== TEST 8: given twice in a block
--- config
location / {
    auth_oauth2_token_require_audience a;
    auth_oauth2_token_require_audience b;
}
--- must_die
--- error_log
"auth_oauth2_token_require_audience" directive is duplicate
