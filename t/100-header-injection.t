# Nothing from an IdP answer can split a header: a claim or a token-endpoint
# member holding a control character (CR, LF, NUL, DEL, ...) refuses the whole
# answer with 502, logged with the claim's name and never its value; the
# backend never sees the request, the client's response carries no injected
# header, and nothing is cached.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $http = <<'CONF';
auth_oauth2_token_claim_set $token_name name;
CONF

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_set_header X-User $oauth2_token_sub;
    proxy_set_header X-Scope $oauth2_token_scope;
    proxy_set_header X-Client $oauth2_token_client_id;
    proxy_set_header X-Name $token_name;
    add_header X-User $oauth2_token_sub always;
    proxy_pass http://backend;
}
location /phantom/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_phantom on;
    proxy_set_header X-User $oauth2_token_sub;
    proxy_pass http://backend;
}
location /exchange/ {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    add_header X-Token-Type $oauth2_token_new_token_type always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_pass http://idp/token; }
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: a sub with CR LF (request splitting on a keep-alive upstream) refuses the answer
--- idp
{"t": {"json": {"active": true, "sub": "alice\r\nX-Injected: yes"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- response_headers
!X-Injected
!X-User
--- backend_calls: 0
--- error_log
claim "sub" holds a control character
--- no_error_log
X-Injected

=== TEST 2: a bare LF in scope
--- idp
{"t": {"json": {"active": true, "sub": "alice", "scope": "read\nX-Injected: yes"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
claim "scope" holds a control character

=== TEST 3: a bare CR in client_id
--- idp
{"t": {"json": {"active": true, "client_id": "app\rX"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
claim "client_id" holds a control character

=== TEST 4: a NUL in a claim_set claim
--- idp
{"t": {"json": {"active": true, "sub": "alice", "name": "Al\u0000ice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
claim "name" holds a control character

=== TEST 5: a DEL in a claim_set claim
--- idp
{"t": {"json": {"active": true, "sub": "alice", "name": "Al\u007fice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
claim "name" holds a control character

=== TEST 6: a tab is allowed and reaches the backend as it is
--- idp
{"t": {"json": {"active": true, "sub": "al\tice", "name": "Alice Liddell"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
X-User: al	ice
X-Name: Alice Liddell

=== TEST 7: a refused answer is never cached: every request asks again and is refused again
--- http_config
auth_oauth2_token_claim_set $token_name name;
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "sub": "alice\r\nX-Injected: yes"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 502
--- idp_calls: 3
--- backend_calls: 0

=== TEST 8: claims of a phantom JWT are held to the same rule
--- idp
{"t": {"body": "eyJhbGciOiAiRVMyNTYifQ.eyJzdWIiOiAiYWxpY2VcclxuWC1JbmplY3RlZDogeWVzIiwgInNjb3BlIjogInJlYWQiLCAiZXhwIjogNDEwMjQ0NDgwMH0.c2lnbmF0dXJl", "content_type": "application/jwt"}}
--- request
GET /phantom/x
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
claim "sub" holds a control character

=== TEST 9: an issued_token_type with CR LF cannot split the client's response
--- idp
{"t": {"json": {"access_token": "new-token", "issued_token_type": "urn:x\r\nX-Injected: yes", "token_type": "Bearer"}}}
--- request
GET /exchange/x
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- response_headers
!X-Injected
!X-Token-Type
--- backend_calls: 0
--- error_log
member "issued_token_type" holds a control character
