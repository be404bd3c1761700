# auth_oauth2_token_www_authenticate on | off | STRING: the challenge sent
# with refusals, as the C module of the same name offers it.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: on is the module's RFC 6750 challenge
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_www_authenticate on;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"

=== TEST 2: off sends no challenge for an inactive token
--- http_config
auth_oauth2_token_www_authenticate off;
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
!WWW-Authenticate

=== TEST 3: off sends no challenge without a token either
--- http_config
auth_oauth2_token_www_authenticate off;
--- request
GET /
--- error_code: 401
--- response_headers
!WWW-Authenticate

=== TEST 4: a string replaces the challenge, variables evaluated per request
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_www_authenticate 'Bearer resource_metadata="https://$host/.well-known/oauth-protected-resource"';
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- request
GET /
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer resource_metadata="https://localhost/.well-known/oauth-protected-resource"

=== TEST 5: a location overrides an inherited off
--- http_config
auth_oauth2_token_www_authenticate off;
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_www_authenticate 'Bearer realm="orders"';
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="orders"

=== TEST 6: a string whose variables come out empty sends no header, not an empty one
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_www_authenticate $http_x_no_such_header;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- request
GET /
--- error_code: 401
--- response_headers
!WWW-Authenticate
