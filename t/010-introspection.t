# RFC 7662 introspection: what the IdP receives and what the client gets,
# one block per row of the contract.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

# Blocks without a config section use this one.
my $config = <<'CONF';
location / {
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

=== TEST 1: an active token reaches the backend, claims exposed as variables
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_set_header X-Active $oauth2_token_active;
    proxy_set_header X-Sub $oauth2_token_sub;
    proxy_set_header X-Scope $oauth2_token_scope;
    proxy_set_header X-Client $oauth2_token_client_id;
    proxy_set_header X-Exp $oauth2_token_exp;
    add_header X-Sub $oauth2_token_sub;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- idp
{"tok1": {"json": {"active": true, "sub": "alice", "scope": "read write", "client_id": "app1", "exp": 4102444800}}}
--- request
GET /api/orders?id=7
--- more_headers
Authorization: Bearer tok1
--- error_code: 200
--- response_headers
X-Sub: alice
--- backend_uri: /api/orders?id=7
--- backend_headers
X-Active: 1
X-Sub: alice
X-Scope: read write
X-Client: app1
X-Exp: 4102444800
Authorization: Bearer tok1
--- idp_calls: 1
--- backend_calls: 1
--- no_error_log
[error]

=== TEST 2: the IdP gets one form POST with client credentials and nothing of the client's
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id "my client";
    auth_oauth2_token_client_secret "p@ss word";
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- idp
{"a+b/c=": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer a+b/c=
Cookie: session=secret-cookie
X-Client-Header: should-not-reach-idp
User-Agent: client-agent/1.0
--- error_code: 200
--- idp_calls: 1
--- idp_request
method: POST
path: /introspect
header Content-Type: application/x-www-form-urlencoded
header Accept: application/json
header Authorization: Basic bXkrY2xpZW50OnAlNDBzcyt3b3Jk
header Content-Length: 47
!header Cookie
!header X-Client-Header
!header User-Agent
body: token=a%2Bb%2Fc%3D&token_type_hint=access_token

=== TEST 3: no token: 401 with a challenge without error (RFC 6750 §3.1)
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_realm "orders api";
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- request
GET /
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="orders api"
--- idp_calls: 0
--- backend_calls: 0

=== TEST 4: another scheme counts as no bearer token: 401 without error
--- request
GET /
--- more_headers
Authorization: Basic Zm9vOmJhcg==
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0
--- backend_calls: 0

=== TEST 5: an empty bearer token is a malformed token (401 invalid_token), IdP not called
--- request
GET /
--- more_headers
Authorization: Bearer
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer realm="api", error="invalid_token", error_description="empty bearer token"$
--- idp_calls: 0
--- backend_calls: 0

=== TEST 6: characters outside b64token make a malformed token (401 invalid_token), IdP not called
--- request
GET /
--- more_headers
Authorization: Bearer abc"def
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer realm="api", error="invalid_token", error_description="bearer token has characters outside b64token"$
--- idp_calls: 0
--- backend_calls: 0

=== TEST 7: two Authorization headers are refused, IdP not called
--- idp
{"tok1": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer tok1
Authorization: Bearer tok1
--- error_code: 400
--- idp_calls: 0
--- backend_calls: 0

=== TEST 8: an inactive token is 401 invalid_token and never reaches the backend
--- idp
{"revoked": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer revoked
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- idp_calls: 1
--- backend_calls: 0
--- no_error_log
[error]

=== TEST 9: an unknown token (IdP's default answer) is refused
--- request
GET /
--- more_headers
Authorization: Bearer never-issued
--- error_code: 401
--- idp_calls: 1
--- backend_calls: 0

=== TEST 10: the module never logs tokens or secrets, even at debug level

--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret VerySecretValue42;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- idp
{"SuperSecretToken123": {"json": {"active": true}}, "OtherSecretToken456": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer SuperSecretToken123
--- error_code: 200
--- no_error_log
/oauth2[^\n]*SuperSecretToken123/
/oauth2[^\n]*VerySecretValue42/
/oauth2[^\n]*Z3c6VmVyeVNlY3JldFZhbHVlNDI/

=== TEST 11: a client's POST body reaches the backend intact and never the IdP
--- idp
{"t": {"json": {"active": true}}}
--- request
POST /api/orders

{"item":"book","qty":2,"note":"token=should-not-reach-idp"}
--- more_headers
Authorization: Bearer t
Content-Type: application/json
--- error_code: 200
--- response_body_like: "body": "\{\\"item\\": ?\\"book\\", ?\\"qty\\": ?2, ?\\"note\\": ?\\"token=should-not-reach-idp\\"\}"
--- idp_request
body: token=t&token_type_hint=access_token
header Content-Type: application/x-www-form-urlencoded
header Content-Length: 36
--- backend_headers
Content-Type: application/json

