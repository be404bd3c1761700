# auth_oauth2_token_client_auth (client_secret_basic / client_secret_post) and
# auth_oauth2_token_pass_options (CORS preflight without a token), and
# credentials and IdPs set per location.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id "gw client";
    auth_oauth2_token_client_secret "s3c ret";
    auth_oauth2_token_client_auth post;
    auth_oauth2_token_pass_options on;
    proxy_pass http://backend;
}
location /strict/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location /exchange/ {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    auth_oauth2_token_client_auth post;
    proxy_pass http://backend;
}
# Two IdPs, two clients.
location /a/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_idp_a;
    auth_oauth2_token_client_id client-a;
    auth_oauth2_token_client_secret sa;
    proxy_pass http://backend;
}
location /b/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_idp_b;
    auth_oauth2_token_client_id client-b;
    auth_oauth2_token_client_secret sb;
    auth_oauth2_token_client_auth post;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_pass http://idp/token; }
location = /_idp_a { internal; proxy_pass http://idp/introspect-a; }
location = /_idp_b { internal; proxy_pass http://idp/introspect-b; }
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: client_secret_post: credentials in the introspection body, no Authorization
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
!header Authorization
body: token=t&token_type_hint=access_token&client_id=gw+client&client_secret=s3c+ret

=== TEST 2: client_secret_post for the token exchange too
--- idp
{"t": {"json": {"access_token": "n", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}}}
--- request
GET /exchange/
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
path: /token
!header Authorization
body_like: &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&client_id=gw&client_secret=s3cret$

=== TEST 3: pass_options: a preflight without a token reaches the backend unchecked
--- request
OPTIONS /
--- more_headers
Origin: https://app.example
Access-Control-Request-Method: GET
--- error_code: 200
--- idp_calls: 0
--- backend_calls: 1

=== TEST 4: pass_options: OPTIONS with a token is still checked
--- idp
{"t": {"json": {"active": false}}}
--- request
OPTIONS /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- idp_calls: 1

=== TEST 5: without pass_options a preflight needs a token like any request
--- request
OPTIONS /strict/
--- error_code: 401
--- backend_calls: 0

=== TEST 6: client_auth takes basic or post
--- config
location / { auth_oauth2_token_client_auth jwt; }
--- must_die
--- error_log
"auth_oauth2_token_client_auth" directive takes "basic" or "post"

=== TEST 7: two locations, two IdPs, two clients: the first asks its IdP as its client
--- idp
{"/introspect-a t": {"json": {"active": true}}, "/introspect-b t": {"json": {"active": false}}}
--- request
GET /a/
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
path: /introspect-a
header Authorization: Basic Y2xpZW50LWE6c2E=
body: token=t&token_type_hint=access_token

=== TEST 8: two locations, two IdPs, two clients: the second asks its own IdP as its own client
--- idp
{"/introspect-a t": {"json": {"active": true}}, "/introspect-b t": {"json": {"active": false}}}
--- request
GET /b/
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- idp_request
path: /introspect-b
!header Authorization
body: token=t&token_type_hint=access_token&client_id=client-b&client_secret=sb
