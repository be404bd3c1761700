# Issue 29 item 1: the C module of the same name documents
# $oauth2_token_new_token_type as the token endpoint's `token_type` (typically
# `Bearer`), so a configuration can rebuild the upstream's Authorization from
# the two variables. `issued_token_type` (RFC 8693 §2.2.1) has a variable of
# its own, $oauth2_token_issued_token_type. Both come back from the exchange
# cache as they came from the token endpoint.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $config = <<'CONF';
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_audience orders-api;
    # As a C-module configuration may write it.
    proxy_set_header Authorization "$oauth2_token_new_token_type $oauth2_token_new_token";
    add_header X-New-Token-Type "[$oauth2_token_new_token_type]" always;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: $oauth2_token_new_token_type is token_type: the upstream gets "Bearer <new token>"
--- idp
{"t": {"json": {"access_token": "new-tok.1", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 60}}}
--- request
GET /orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- response_headers
X-New-Token-Type: [Bearer]
--- backend_headers
Authorization: Bearer new-tok.1
Authorization*: 1

=== TEST 2: the value is the token endpoint's, as it wrote it (here lower case)
--- idp
{"t": {"json": {"access_token": "new-tok.2", "issued_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_type": "bearer"}}}
--- request
GET /orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- response_headers
X-New-Token-Type: [bearer]
--- backend_headers
Authorization: bearer new-tok.2

=== TEST 3: no token_type in the answer: $oauth2_token_new_token_type is empty, $oauth2_token_issued_token_type is not
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    proxy_set_header Authorization "$oauth2_token_new_token_type $oauth2_token_new_token";
    proxy_set_header X-Issued-Type $oauth2_token_issued_token_type;
    add_header X-New-Token-Type "[$oauth2_token_new_token_type]" always;
    add_header X-Issued-Type "[$oauth2_token_issued_token_type]" always;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
--- idp
{"t": {"json": {"access_token": "new-tok.3", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}}}
--- request
GET /orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- response_headers
X-New-Token-Type: []
X-Issued-Type: [urn:ietf:params:oauth:token-type:access_token]
--- backend_headers
X-Issued-Type: urn:ietf:params:oauth:token-type:access_token

=== TEST 4: introspect then exchange: the same two values
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    add_header X-New-Token-Type "[$oauth2_token_new_token_type]" always;
    add_header X-Issued-Type "[$oauth2_token_issued_token_type]" always;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"/introspect t": {"json": {"active": true, "sub": "alice"}},
 "/token t": {"json": {"access_token": "new-tok.4", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}}}
--- request
GET /orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- response_headers
X-New-Token-Type: [Bearer]
X-Issued-Type: [urn:ietf:params:oauth:token-type:access_token]
--- idp_calls: 2

=== TEST 5: from the exchange cache: the same values, and the IdP asked once
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    proxy_set_header Authorization "$oauth2_token_new_token_type $oauth2_token_new_token";
    proxy_set_header X-Issued-Type $oauth2_token_issued_token_type;
    add_header X-New-Token-Type "[$oauth2_token_new_token_type]" always;
    add_header X-Issued-Type "[$oauth2_token_issued_token_type]" always;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
--- http_config
auth_oauth2_token_exchange_cache zone=exchanged:1m max_ttl=60s;
--- idp
{"t": {"json": {"access_token": "new-tok.5", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 60}}}
--- request
GET /orders
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- response_headers
X-New-Token-Type: [Bearer]
X-Issued-Type: [urn:ietf:params:oauth:token-type:access_token]
--- idp_calls: 1
--- backend_headers
Authorization: Bearer new-tok.5

=== TEST 6: without an exchange both are empty
--- config
location / {
    add_header X-New-Token-Type "[$oauth2_token_new_token_type]" always;
    add_header X-Issued-Type "[$oauth2_token_issued_token_type]" always;
    proxy_pass http://backend;
}
--- request
GET /orders
--- error_code: 200
--- response_headers
X-New-Token-Type: []
X-Issued-Type: []
