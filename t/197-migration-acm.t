# Issue 29 item 3: docs/MIGRATION.md, section 5 ("From an NGINX ACM
# introspection policy"), row by row: the "Field by field" table (each
# policy field's replacement does what the row says), the verifyClaims type
# table, and "What changes for the client", with the guide's "after"
# configuration (hosts pointed at the test IdP and backend). Titles name the
# table and the row (t/194 keeps the guide's rows and these titles in step).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $http = <<'CONF';
auth_oauth2_token_client_id          api-gateway;
auth_oauth2_token_client_secret_file secrets/idp-client-secret;
auth_oauth2_token_introspect_endpoint /_oauth2_introspect;
auth_oauth2_token_introspect_cache    zone=acm_tokens:1m max_ttl=5m;
auth_oauth2_token_claim_set $token_username username;
auth_oauth2_token_claim_set $token_roles resource_access.account.roles;
CONF

my $config = <<'CONF';
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim aud string orders-api;
    auth_oauth2_token_require_claim scope delimited "openid profile email";
    auth_oauth2_token_require_claim email_verified boolean true;
    auth_oauth2_token_require_claim resource_access.account.roles array view-profile;
    proxy_set_header X-Token-Username $token_username;
    proxy_set_header X-Token-Exp      $oauth2_token_exp;
    proxy_set_header X-Token-Scope    $oauth2_token_scope;
    proxy_set_header X-Token-Roles    $token_roles;
    proxy_set_header Authorization    "";
    proxy_pass http://backend;
}
location = /_oauth2_introspect {
    internal;
    proxy_read_timeout 1s;
    proxy_pass http://idp/realms/acme/protocol/openid-connect/token/introspect;
}
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: fields: row [introspectionEndpoint]: the internal location's proxy_pass is asked, with a POST the module builds
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "orders-api", "scope": "email openid profile", "email_verified": true, "resource_access": {"account": {"roles": ["view-profile"]}}}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
method: POST
path: /realms/acme/protocol/openid-connect/token/introspect
header Content-Type: application/x-www-form-urlencoded

=== TEST 2: fields: row [data[].clientAppID, data[].clientSecret]: Basic credentials from client_id and the secret file
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "orders-api", "scope": "openid profile email", "email_verified": true, "resource_access": {"account": {"roles": ["view-profile"]}}}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
header Authorization: Basic YXBpLWdhdGV3YXk6ZXhhbXBsZS1zZWNyZXQ=

=== TEST 3: fields: row [authzServerTokenHint]: always access_token
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- idp_request
body: token=t&token_type_hint=access_token

=== TEST 4: fields: row [forwardedClaimsInProxyHeader]: username, exp and scope (and a nested claim) as proxy headers
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "username": "alice", "exp": 4102444800, "aud": "orders-api", "scope": "openid profile email", "email_verified": true, "resource_access": {"account": {"roles": ["view-profile", "manage"]}}}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
X-Token-Username: alice
X-Token-Exp: 4102444800
X-Token-Scope: openid profile email
X-Token-Roles: view-profile,manage

=== TEST 5: fields: row [cacheIntrospectionResponse (default 5m; 0s turns it off)]: max_ttl keeps answers: one IdP call
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "orders-api", "scope": "openid profile email", "email_verified": true, "resource_access": {"account": {"roles": ["view-profile"]}}}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- idp_calls: 1

=== TEST 6: fields: row [cacheIntrospectionResponse (default 5m; 0s turns it off)]: max_ttl=0 asks every time (BYPASS)
--- user_files
>>> secrets/idp-client-secret
example-secret
--- http_config
auth_oauth2_token_client_id          api-gateway;
auth_oauth2_token_client_secret_file secrets/idp-client-secret;
auth_oauth2_token_introspect_endpoint /_oauth2_introspect;
auth_oauth2_token_introspect_cache    zone=acm_tokens:1m max_ttl=0;
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- repeat: 2
--- error_code: 200
--- response_headers
X-Cache: BYPASS
--- idp_calls: 2

=== TEST 7: fields: row [clientTokenSuppliedIn HEADER + clientTokenName Authorization (the default)]: Authorization: Bearer is read by default
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- idp_calls: 1

=== TEST 8: fields: row [HEADER + another name, or QUERY]: header=NAME, withheld from the backend
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source header=X-Api-Token query=access_token;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /api/orders
--- more_headers
X-Api-Token: t
--- error_code: 200
--- backend_headers
!X-Api-Token

=== TEST 9: fields: row [HEADER + another name, or QUERY]: query=NAME, withheld from the backend
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source header=X-Api-Token query=access_token;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /api/orders?a=1&access_token=t
--- error_code: 200
--- backend_uri: /api/orders?a=1

=== TEST 10: fields: row [introspectionResponse application/jwt + forwardToken]: phantom: the JWT replaces the token upstream
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_phantom on;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_set_header Accept "application/jwt"; proxy_pass http://idp/introspect; }
--- idp
{"t": {"body": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln", "content_type": "application/jwt"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln

=== TEST 11: fields: row [verifyClaims[]]: one require_claim each, all must hold (here the roles are missing)
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "orders-api", "scope": "openid profile email", "email_verified": true, "resource_access": {"account": {"roles": ["manage"]}}}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- backend_calls: 0

=== TEST 12: fields: row [errorReturnConditions.notSupplied (401)]: status missing sets it
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status missing 418;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- request
GET /api/orders
--- error_code: 418
--- idp_calls: 0

=== TEST 13: fields: row [errorReturnConditions.noMatch (403)]: status forbidden, and invalid 403 keeps ACM's status for inactive tokens
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status invalid 403;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 403

=== TEST 14: fields: row [enableSNI, proxyTLSName]: an https internal location with proxy_ssl_server_name and proxy_ssl_name is accepted; an unreachable IdP is 502
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_oauth2_introspect {
    internal;
    proxy_ssl_server_name on;
    proxy_ssl_name idp.example.com;
    proxy_pass https://127.0.0.1:$TEST_NGINX_CLOSED_PORT/introspect;
}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 15: fields: row [resolver]: an upstream block needs none (the harness's idp upstream)
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- idp_calls: 1

=== TEST 16: types: row ["type": "STRING"]: string matches a string equal to the value
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim aud string orders-api;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "orders-api"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 17: types: row ["type": "STRING"]: ... or an array containing it
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim aud string orders-api;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": ["billing-api", "orders-api"]}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 18: types: row ["type": "STRING"]: case-sensitive; another value is 403 insufficient_scope, the log names the claim, not its value
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim aud string orders-api;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "Orders-API-secret-value"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"
--- error_log
claim "aud" does not meet the requirement
--- no_error_log
Orders-API-secret-value

=== TEST 19: types: row ["type": "STRING" with "delimiter": "SPACE"]: delimited asks for every word, in any order
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim scope delimited "openid profile email";
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "scope": "email orders:read openid profile"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 20: types: row ["type": "STRING" with "delimiter": "SPACE"]: one word missing is 403
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim scope delimited "openid profile email";
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "scope": "openid email"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 403

=== TEST 21: types: row ["type": "ARRAY"]: an array containing every value passes
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim roles array view-profile manage;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "roles": ["manage", "x", "view-profile"]}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 22: types: row ["type": "ARRAY"]: a single string equal to a one-element value fails (ACM accepts it; use string)
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim roles array view-profile;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "roles": "view-profile"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 403

=== TEST 23: types: row ["type": "INTEGER"]: 42 or "42"
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim level integer 42;
    auth_oauth2_token_require_claim tier integer 42;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "level": 42, "tier": "42"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 24: types: row ["type": "BOOLEAN"]: true, or "TRUE" in any case
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_claim email_verified boolean true;
    auth_oauth2_token_require_claim phone_verified boolean true;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "email_verified": true, "phone_verified": "TRUE"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 25: types: row [another delimiter (COMMA, PLUS, …)]: claim_set the claim and require a map of it
--- http_config
auth_oauth2_token_client_id          api-gateway;
auth_oauth2_token_client_secret_file secrets/idp-client-secret;
auth_oauth2_token_introspect_endpoint /_oauth2_introspect;
auth_oauth2_token_claim_set $token_groups groups_csv;
map $token_groups $in_admins { default 0; "~(^|,)admins(,|$)" 1; }
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require $in_admins error=403;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "groups_csv": "users,admins"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 26: client: row [no token]: 401 Bearer realm="api"
--- user_files
>>> secrets/idp-client-secret
example-secret
--- request
GET /api/orders
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0

=== TEST 27: client: row ["active": false]: 401 invalid_token (ACM: 403)
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"

=== TEST 28: client: row [a verifyClaims condition fails]: 403 insufficient_scope
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "orders-api", "scope": "openid profile email", "email_verified": false, "resource_access": {"account": {"roles": ["view-profile"]}}}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"

=== TEST 29: client: row [the IdP fails, rejects the gateway, cannot be resolved or reached]: rejected credentials are 502
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"status": 401, "json": {"error": "invalid_client"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 30: client: row [the IdP fails, rejects the gateway, cannot be resolved or reached]: a name that does not resolve is 502
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_oauth2_introspect {
    internal;
    resolver 127.0.0.1:$TEST_NGINX_CLOSED_PORT;
    resolver_timeout 1s;
    set $idp_host idp.invalid;
    proxy_pass http://$idp_host/introspect;
}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0

=== TEST 31: client: row [the IdP fails, rejects the gateway, cannot be resolved or reached]: a timeout is 504
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"mode": "hang"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 504

=== TEST 32: client: row [the token reaches the backend]: Authorization removed by proxy_set_header Authorization ""
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"json": {"active": true, "aud": "orders-api", "scope": "openid profile email", "email_verified": true, "resource_access": {"account": {"roles": ["view-profile"]}}}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
!Authorization

=== TEST 33: client: row [the token reaches the backend]: without that line, Authorization is passed on
--- user_files
>>> secrets/idp-client-secret
example-secret
--- config
location /api/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_oauth2_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_headers
Authorization: Bearer t

=== TEST 34: client: row [error bodies]: nginx's error pages
--- user_files
>>> secrets/idp-client-secret
example-secret
--- idp
{"t": {"status": 500, "body": "oops"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- response_body_like
<title>502 Bad Gateway</title>
