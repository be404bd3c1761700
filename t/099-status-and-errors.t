# auth_oauth2_token_status SITUATION CODE, $oauth2_token_error, and the JSON
# error recipe of nginx-conf/json-errors.conf, run as it is written there.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

open my $fh, '<', 'nginx-conf/json-errors.conf' or die "json-errors.conf: $!";
my $example = do { local $/; <$fh> };
my ($recipe) = $example =~ /^\s*# --- recipe: JSON errors\n(.*?)^\s*# --- end of recipe/ms
    or die "no recipe markers in nginx-conf/json-errors.conf\n";

my $http = <<'CONF';
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
CONF

my $locations = <<'CONF';
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_scope api;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_read_timeout 3s;
    proxy_pass http://idp/introspect;
}
CONF

run_tests(default_http_config => $http, default_config => $recipe . $locations);

__DATA__

=== TEST 1: recipe: no token is a JSON 401 that keeps the challenge
--- request
GET /api/x
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
Content-Type: application/json
--- response_body_like: ^\{"error":"missing_token"\}\n\z
--- idp_calls: 0

=== TEST 2: recipe: an inactive token is a JSON 401 invalid_token
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
Content-Type: application/json
--- response_body_like: ^\{"error":"invalid_token"\}\n\z

=== TEST 3: recipe: a malformed token is a JSON 401 invalid_token
--- request
GET /api/x
--- more_headers
Authorization: Bearer a"b
--- error_code: 401
--- response_body_like: ^\{"error":"invalid_token"\}\n\z

=== TEST 4: recipe: a missing scope is a JSON 403 insufficient_scope
--- idp
{"t": {"json": {"active": true, "scope": "other"}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope", scope="api"
--- response_body_like: ^\{"error":"insufficient_scope"\}\n\z

=== TEST 5: recipe: an IdP failure is the chosen 503, JSON, with Retry-After
--- idp
{"t": {"status": 500, "json": {"error": "boom"}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 503
--- response_headers
Retry-After: 5
Content-Type: application/json
!WWW-Authenticate
--- response_body_like: ^\{"error":"idp_error"\}\n\z
--- error_log
introspection endpoint answered 500

=== TEST 6: recipe: an IdP timeout is a JSON 504 idp_timeout
--- idp
{"t": {"mode": "hang"}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 504
--- response_body_like: ^\{"error":"idp_timeout"\}\n\z
--- error_log
introspection endpoint timed out

=== TEST 7: recipe: an allowed request is untouched
--- idp
{"t": {"json": {"active": true, "scope": "api"}}}
--- request
GET /api/x
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_calls: 1

=== TEST 8: status missing 418, the challenge still sent; $oauth2_token_error without error_page
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status missing 418;
    add_header X-Error $oauth2_token_error always;
    proxy_pass http://backend;
}
--- request
GET /
--- error_code: 418
--- response_headers
WWW-Authenticate: Bearer realm="api"
X-Error: missing_token
--- idp_calls: 0

=== TEST 9: status invalid: inactive tokens get the chosen code
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status invalid 419;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 419
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"

=== TEST 10: status forbidden 404 hides the resource from a token without the scope
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_scope admin;
    auth_oauth2_token_status forbidden 404;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true, "scope": "read"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 404
--- backend_calls: 0

=== TEST 11: status idp_error and idp_timeout are separate
--- config
location /err/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status idp_error 500;
    auth_oauth2_token_status idp_timeout 599;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_read_timeout 3s; proxy_pass http://idp/introspect; }
--- idp
{"t": {"status": 502, "body": "bad gateway"}}
--- request
GET /err/
--- more_headers
Authorization: Bearer t
--- error_code: 500

=== TEST 12: status idp_timeout applies to timeouts only
--- config
location /err/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status idp_error 500;
    auth_oauth2_token_status idp_timeout 599;
    add_header X-Error $oauth2_token_error always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_read_timeout 3s; proxy_pass http://idp/introspect; }
--- idp
{"t": {"mode": "hang"}}
--- request
GET /err/
--- more_headers
Authorization: Bearer t
--- error_code: 599
--- response_headers
X-Error: idp_timeout

=== TEST 13: statuses are inherited per situation
--- config
auth_oauth2_token_status missing 418;
auth_oauth2_token_status invalid 419;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status invalid 420;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- error_code: 418

=== TEST 14: statuses are inherited per situation: the location's own wins
--- config
auth_oauth2_token_status missing 418;
auth_oauth2_token_status invalid 419;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_status invalid 420;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 420

=== TEST 15: status invalid applies to a refused exchange (invalid_grant)
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_status invalid 419;
    add_header X-Error $oauth2_token_error always;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
--- idp
{"t": {"status": 400, "json": {"error": "invalid_grant"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 419
--- response_headers
X-Error: invalid_token

=== TEST 16: a passing request has an empty $oauth2_token_error
--- config
location / {
    auth_oauth2_token_introspect on;
    add_header X-Error "[$oauth2_token_error]" always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- response_headers
X-Error: []
