# Configurations written for Curity's phantom token module (2.0) work
# unchanged: its directives map onto this module's, the internal location
# supplies the IdP's headers and credentials itself, and its answers (401
# with a challenge carrying its realm and the announced scopes) stay. The
# configurations are those of its README, with hosts and paths pointed at
# the test IdP and backend.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAic2NvcGUiOiAic2NvcGVfYSIsICJleHAiOiA0MTAyNDQ0ODAwfQ.c2ln';

# "NGINX Parameters for the Introspection Endpoint" and "Simple Configuration".
my $simple = <<'CONF';
location /api {
    phantom_token on;
    phantom_token_introspection_endpoint curity;
    proxy_pass http://backend/api;
}

location curity {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Accept "application/jwt";
    proxy_set_header Content-Type "application/x-www-form-urlencoded";
    proxy_set_header Authorization "Basic bXlfY2xpZW50X2lkOm15X2NsaWVudF9zZWNyZXQ=";
    proxy_pass "http://idp/oauth/v2/oauth-introspect";
}
CONF

run_tests(default_config => $simple);

__DATA__

=== TEST 1: simple: an active token's JWT replaces it upstream; the IdP gets the location's headers and credentials
--- idp
{"opaque1": {"body": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAic2NvcGUiOiAic2NvcGVfYSIsICJleHAiOiA0MTAyNDQ0ODAwfQ.c2ln", "content_type": "application/jwt"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer opaque1
Cookie: session=1
--- error_code: 200
--- backend_uri: /api/orders
--- backend_headers
Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAic2NvcGUiOiAic2NvcGVfYSIsICJleHAiOiA0MTAyNDQ0ODAwfQ.c2ln
--- idp_request
method: POST
path: /oauth/v2/oauth-introspect
header Authorization: Basic bXlfY2xpZW50X2lkOm15X2NsaWVudF9zZWNyZXQ=
header Accept: application/jwt
header Content-Type: application/x-www-form-urlencoded
!header Cookie
body_like: ^token=opaque1(&|$)

=== TEST 2: simple: no token is 401 with the default realm
--- idp
{}
--- request
GET /api/orders
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0

=== TEST 3: simple: an expired token (the IdP answers 204) is 401
--- idp
{"old": {"status": 204, "body": ""}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer old
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer realm="api"
--- backend_calls: 0

=== TEST 4: simple: the IdP failing is 502, never a pass
--- idp
{"t": {"status": 500, "body": "oops"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0

=== TEST 5: complex: the realm and the announced scopes are in the challenge
--- config
location /api {
    phantom_token on;
    phantom_token_introspection_endpoint curity;
    phantom_token_realm "myGoodAPI";
    phantom_token_scopes "scope_a scope_b scope_c";
    proxy_pass http://backend/api;
}

location curity {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Accept "application/jwt";
    proxy_set_header Content-Type "application/x-www-form-urlencoded";
    proxy_set_header Authorization "Basic bXlfY2xpZW50X2lkOm15X2NsaWVudF9zZWNyZXQ=";
    proxy_pass "http://idp/oauth/v2/oauth-introspect";
}
--- idp
{}
--- request
GET /api/orders
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="myGoodAPI", scope="scope_a scope_b scope_c"

=== TEST 6: phantom_token_scope, once per scope, announces them the same way
--- config
location /api {
    phantom_token on;
    phantom_token_introspection_endpoint curity;
    phantom_token_scope "scope_a";
    phantom_token_scope "scope_b";
    phantom_token_scope "scope_c";
    proxy_pass http://backend/api;
}

location curity {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Accept "application/jwt";
    proxy_set_header Content-Type "application/x-www-form-urlencoded";
    proxy_set_header Authorization "Basic bXlfY2xpZW50X2lkOm15X2NsaWVudF9zZWNyZXQ=";
    proxy_pass "http://idp/oauth/v2/oauth-introspect";
}
--- idp
{"old": {"status": 204, "body": ""}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer old
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer realm="api", scope="scope_a scope_b scope_c"

=== TEST 7: caching with proxy_cache on the internal location: the configuration works as written
--- http_config
proxy_cache_path $TEST_NGINX_PREFIX/cache levels=1:2 keys_zone=my_cache:10m max_size=10g
                 inactive=60m use_temp_path=off;
--- config
location /api {
    phantom_token on;
    phantom_token_introspection_endpoint curity;
    phantom_token_scopes "scope_a scope_b scope_c";
    phantom_token_realm "myGoodAPI";
    proxy_pass http://backend/api;
}

location curity {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Accept "application/jwt";
    proxy_set_header Content-Type "application/x-www-form-urlencoded";
    proxy_set_header Authorization "Basic bXlfY2xpZW50X2lkOm15X2NsaWVudF9zZWNyZXQ=";
    proxy_cache_methods POST;
    proxy_cache my_cache;
    proxy_cache_key $request_body;
    proxy_ignore_headers Set-Cookie;
    proxy_pass "http://idp/oauth/v2/oauth-introspect";
}
--- idp
{"opaque1": {"body": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAic2NvcGUiOiAic2NvcGVfYSIsICJleHAiOiA0MTAyNDQ0ODAwfQ.c2ln", "content_type": "application/jwt", "headers": {"Cache-Control": "max-age=60"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer opaque1
--- repeat: 2
--- error_code: 200
--- backend_headers
Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAic2NvcGUiOiAic2NvcGVfYSIsICJleHAiOiA0MTAyNDQ0ODAwfQ.c2ln

=== TEST 8: cacheless, with a larger proxy_buffer_size for large JWTs
--- config
location /api {
    phantom_token on;
    phantom_token_introspection_endpoint curity;
    phantom_token_scopes "scope_a scope_b scope_c";
    phantom_token_realm "myGoodAPI";
    proxy_pass http://backend/api;
}

location curity {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Accept "application/jwt";
    proxy_set_header Content-Type "application/x-www-form-urlencoded";
    proxy_set_header Authorization "Basic bXlfY2xpZW50X2lkOm15X2NsaWVudF9zZWNyZXQ=";
    proxy_ignore_headers Set-Cookie;
    proxy_buffer_size 16k;
    proxy_buffers 4 16k;
    proxy_pass "http://idp/oauth/v2/oauth-introspect";
}
--- idp
{"opaque1": {"body": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiAiYWxpY2UiLCAic2NvcGUiOiAic2NvcGVfYSIsICJleHAiOiA0MTAyNDQ0ODAwfQ.c2ln", "content_type": "application/jwt"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer opaque1
--- error_code: 200

=== TEST 9: an invalid scope in phantom_token_scopes fails nginx -t naming the directive
--- config
location /api {
    phantom_token on;
    phantom_token_introspection_endpoint curity;
    phantom_token_scopes "a\"b";
}
--- must_die
--- error_log
"phantom_token_scopes" directive has an invalid scope
