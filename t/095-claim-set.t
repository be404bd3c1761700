# auth_oauth2_token_claim_set $variable CLAIM: any claim of the introspection
# answer, by dotted path, as a variable (forwarded as a header, or used by a
# requirement through map), from the IdP and from the cache.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $http = <<'CONF';
auth_oauth2_token_claim_set $token_roles resource_access.account.roles;
auth_oauth2_token_claim_set $token_aud aud;
auth_oauth2_token_claim_set $token_tenant tenant;
auth_oauth2_token_claim_set $token_level acr_level;
auth_oauth2_token_claim_set $token_address address;
map $token_aud $for_orders {
    default 0;
    "~(^|,)orders-api(,|$)" 1;
}
CONF

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_set_header X-Roles $token_roles;
    proxy_set_header X-Aud $token_aud;
    proxy_set_header X-Tenant $token_tenant;
    proxy_set_header X-Level $token_level;
    proxy_set_header X-Address $token_address;
    proxy_pass http://backend;
}
location /orders/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require $for_orders error=403;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: nested paths, arrays, numbers and objects become header values; a missing claim sends no header
--- idp
{"t": {"json": {"active": true, "aud": ["orders-api", "billing-api"], "acr_level": 2,
  "resource_access": {"account": {"roles": ["view", "manage"]}}, "address": {"country": "NL"}}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
X-Roles: view,manage
X-Aud: orders-api,billing-api
X-Level: 2
X-Address: {"country":"NL"}
!X-Tenant

=== TEST 2: claims come from the cache on hits
--- http_config
auth_oauth2_token_claim_set $token_roles resource_access.account.roles;
auth_oauth2_token_claim_set $token_aud aud;
auth_oauth2_token_claim_set $token_tenant tenant;
auth_oauth2_token_claim_set $token_level acr_level;
auth_oauth2_token_claim_set $token_address address;
map $token_aud $for_orders { default 0; }
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "tenant": "acme", "resource_access": {"account": {"roles": ["view"]}}}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- idp_calls: 1
--- backend_calls: 3
--- backend_headers
X-Tenant: acme
X-Roles: view

=== TEST 3: a claim feeds a requirement through map: allowed
--- idp
{"t": {"json": {"active": true, "aud": ["orders-api"]}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 4: a claim feeds a requirement through map: refused
--- idp
{"t": {"json": {"active": true, "aud": "billing-api"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- backend_calls: 0

=== TEST 5: claim_set belongs in http{}
--- http_config
--- config
location / { auth_oauth2_token_claim_set $x sub; }
--- must_die
--- error_log
"auth_oauth2_token_claim_set" directive is not allowed here

=== TEST 6: an empty path segment fails nginx -t
--- http_config
auth_oauth2_token_claim_set $x a..b;
--- config
location / { return 200; }
--- must_die
--- error_log
"auth_oauth2_token_claim_set" directive has an invalid claim path "a..b"

=== TEST 7: a variable nginx already has cannot be redefined
--- http_config
auth_oauth2_token_claim_set $host sub;
--- config
location / { return 200; }
--- must_die
--- error_log
the duplicate "host" variable
