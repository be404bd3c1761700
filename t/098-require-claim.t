# auth_oauth2_token_require_claim CLAIM TYPE VALUE...: each type's matching
# rules, nested claims, the 403 and its log line (claim named, value not),
# rules adding up across blocks, and the checks on cache hits.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $http = <<'CONF';
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
CONF

my $config = <<'CONF';
auth_oauth2_token_introspect on;
location /string/ {
    auth_oauth2_token_require_claim tenant string acme globex;
    proxy_pass http://backend;
}
location /integer/ {
    auth_oauth2_token_require_claim level integer 2 3;
    proxy_pass http://backend;
}
location /boolean/ {
    auth_oauth2_token_require_claim email_verified boolean true;
    proxy_pass http://backend;
}
location /array/ {
    auth_oauth2_token_require_claim resource_access.orders.roles array reader writer;
    proxy_pass http://backend;
}
location /delimited/ {
    auth_oauth2_token_require_claim scope delimited orders:write orders:read;
    proxy_pass http://backend;
}
location /both/ {
    auth_oauth2_token_require_claim tenant string acme;
    auth_oauth2_token_require_claim email_verified boolean true;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: string: a claim equal to one of the values passes
--- idp
{"t": {"json": {"active": true, "tenant": "globex"}}}
--- request
GET /string/
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_calls: 1

=== TEST 2: string: an array containing one of the values passes
--- idp
{"t": {"json": {"active": true, "tenant": ["initech", "acme"]}}}
--- request
GET /string/
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 3: string: another value is 403 insufficient_scope; the log names the claim, not its value
--- idp
{"t": {"json": {"active": true, "tenant": "initech-secret-tenant"}}}
--- request
GET /string/
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"
--- backend_calls: 0
--- error_log
auth_oauth2_token: claim "tenant" does not meet the requirement
--- no_error_log
initech-secret-tenant

=== TEST 4: string: matching is case-sensitive
--- idp
{"t": {"json": {"active": true, "tenant": "ACME"}}}
--- request
GET /string/
--- more_headers
Authorization: Bearer t
--- error_code: 403

=== TEST 5: string: a missing or null claim fails
--- idp
{"t": [{"json": {"active": true}}, {"json": {"active": true, "tenant": null}}]}
--- request
GET /string/
--- more_headers
Authorization: Bearer t
--- repeat: 2
--- error_code: 403
--- idp_calls: 2

=== TEST 6: integer: a number equal to one of the values passes
--- idp
{"a": {"json": {"active": true, "level": 3}}}
--- request
GET /integer/
--- more_headers
Authorization: Bearer a
--- error_code: 200

=== TEST 7: integer: its decimal text passes too
--- idp
{"b": {"json": {"active": true, "level": "2"}}}
--- request
GET /integer/
--- more_headers
Authorization: Bearer b
--- error_code: 200

=== TEST 8: integer: another number, a fraction or padded text fails
--- idp
{"t": [{"json": {"active": true, "level": 4}}, {"json": {"active": true, "level": 2.5}}, {"json": {"active": true, "level": "02"}}]}
--- request
GET /integer/
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 403
--- idp_calls: 3
--- error_log_count
claim "level" does not meet the requirement: 3

=== TEST 9: boolean: true, or "TRUE" as text, passes
--- idp
{"t": [{"json": {"active": true, "email_verified": true}}, {"json": {"active": true, "email_verified": "TRUE"}}]}
--- request
GET /boolean/
--- more_headers
Authorization: Bearer t
--- repeat: 2
--- error_code: 200
--- idp_calls: 2

=== TEST 10: boolean: false, or other text, fails
--- idp
{"t": [{"json": {"active": true, "email_verified": false}}, {"json": {"active": true, "email_verified": "yes"}}]}
--- request
GET /boolean/
--- more_headers
Authorization: Bearer t
--- repeat: 2
--- error_code: 403
--- idp_calls: 2

=== TEST 11: array: every listed value must be in the (nested) array, in any order
--- idp
{"t": {"json": {"active": true, "resource_access": {"orders": {"roles": ["admin", "writer", "reader"]}}}}}
--- request
GET /array/
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 12: array: one value missing, or a string instead of an array, fails
--- idp
{"t": [{"json": {"active": true, "resource_access": {"orders": {"roles": ["reader"]}}}},
       {"json": {"active": true, "resource_access": {"orders": {"roles": "reader writer"}}}},
       {"json": {"active": true, "resource_access": {"billing": {"roles": ["reader", "writer"]}}}}]}
--- request
GET /array/
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 403
--- idp_calls: 3
--- error_log
claim "resource_access.orders.roles" does not meet the requirement

=== TEST 13: delimited: every value among the space-separated words, in any order
--- idp
{"t": {"json": {"active": true, "scope": "openid orders:read profile orders:write"}}}
--- request
GET /delimited/
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 14: delimited: one word missing fails; words are not substrings
--- idp
{"t": [{"json": {"active": true, "scope": "orders:read"}}, {"json": {"active": true, "scope": "orders:readx orders:write"}}]}
--- request
GET /delimited/
--- more_headers
Authorization: Bearer t
--- repeat: 2
--- error_code: 403
--- idp_calls: 2

=== TEST 15: several rules: all hold
--- idp
{"t": {"json": {"active": true, "tenant": "acme", "email_verified": true}}}
--- request
GET /both/
--- more_headers
Authorization: Bearer t
--- error_code: 200

=== TEST 16: several rules: the second fails
--- idp
{"t": {"json": {"active": true, "tenant": "acme", "email_verified": false}}}
--- request
GET /both/
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- error_log
claim "email_verified" does not meet the requirement

=== TEST 17: rules of the server add to the location's
--- config
auth_oauth2_token_introspect on;
auth_oauth2_token_require_claim tenant string acme;
location / {
    auth_oauth2_token_require_claim email_verified boolean true;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"good": {"json": {"active": true, "tenant": "acme", "email_verified": true}},
 "other-tenant": {"json": {"active": true, "tenant": "globex", "email_verified": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer other-tenant
--- error_code: 403
--- error_log
claim "tenant" does not meet the requirement

=== TEST 18: claims are checked on cache hits too: a failing token stays refused without asking again
--- http_config
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "tenant": "initech"}}}
--- request
GET /string/
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 403
--- idp_calls: 1
--- error_log_count
claim "tenant" does not meet the requirement: 3

=== TEST 19: cache hits keep the claim values: a passing token passes again, one IdP call
--- http_config
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- idp
{"t": {"json": {"active": true, "resource_access": {"orders": {"roles": ["writer", "reader"]}}}}}
--- request
GET /array/
--- more_headers
Authorization: Bearer t
--- repeat: 3
--- error_code: 200
--- idp_calls: 1
--- backend_calls: 3
