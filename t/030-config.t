# Directives: inheritance across http/server/location, the secret file, and
# configuration mistakes that must fail `nginx -t` naming the directive.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

run_tests();

__DATA__

=== TEST 1: on without an endpoint fails nginx -t naming the directive
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_client_id gw;
}
--- must_die
--- error_log
"auth_oauth2_token_introspect" is on but "auth_oauth2_token_introspect_endpoint" is not set

=== TEST 2: on without a client id fails nginx -t
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_i;
}
--- must_die
--- error_log
"auth_oauth2_token_introspect" is on but "auth_oauth2_token_client_id" is not set

=== TEST 3: secret and secret file in one block is an error
--- user_files
>>> secret.txt
s3cret
--- config
location / {
    auth_oauth2_token_client_secret abc;
    auth_oauth2_token_client_secret_file $TEST_NGINX_PREFIX/secret.txt;
}
--- must_die
--- error_log
"auth_oauth2_token_client_secret_file" directive conflicts with another client secret

=== TEST 4: an unreadable secret file is an error naming the directive and the file
--- config
location / {
    auth_oauth2_token_client_secret_file /nonexistent/oauth2-secret;
}
--- must_die
--- error_log
"auth_oauth2_token_client_secret_file" directive cannot read "/nonexistent/oauth2-secret"

=== TEST 5: the endpoint must be a location URI
--- config
location / {
    auth_oauth2_token_introspect_endpoint http://idp/introspect;
}
--- must_die
--- error_log
"auth_oauth2_token_introspect_endpoint" directive needs the URI of an internal location

=== TEST 6: introspect takes on or off
--- config
location / {
    auth_oauth2_token_introspect yes;
}
--- must_die
--- error_log
"auth_oauth2_token_introspect" directive takes "on" or "off"

=== TEST 7: a directive repeated in one block is an error
--- config
location / {
    auth_oauth2_token_client_id a;
    auth_oauth2_token_client_id b;
}
--- must_die
--- error_log
"auth_oauth2_token_client_id" directive is duplicate

=== TEST 8: a realm with a quote is refused
--- config
location / {
    auth_oauth2_token_realm 'a"b';
}
--- must_die
--- error_log
"auth_oauth2_token_realm" directive must not contain quotes

=== TEST 9: a directive outside http is refused
--- main_config
auth_oauth2_token_introspect on;
--- config
location / { return 200; }
--- must_die
--- error_log
"auth_oauth2_token_introspect" directive is not allowed here

=== TEST 10: the secret file's line ending is not part of the secret
--- user_files
>>> secret.txt
s3cret
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret_file secret.txt;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
header Authorization: Basic Z3c6czNjcmV0

=== TEST 11: settings made at http level are inherited; a location can turn checks off
--- http_config
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_client_secret s3cret;
--- config
location /public {
    auth_oauth2_token_introspect off;
    proxy_pass http://backend;
}
location / {
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- request
GET /public/page
--- error_code: 200
--- backend_calls: 1
--- idp_calls: 0

=== TEST 12: http-level settings protect a location that says nothing
--- http_config
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
--- config
location / {
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- request
GET /private
--- error_code: 401
--- backend_calls: 0

=== TEST 13: a location overrides the client credentials of its server
--- config
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id server-client;
auth_oauth2_token_client_secret server-secret;
location /other {
    auth_oauth2_token_client_id loc-client;
    auth_oauth2_token_client_secret loc-secret;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
}
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /other
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_request
header Authorization: Basic bG9jLWNsaWVudDpsb2Mtc2VjcmV0

=== TEST 14: phase takes access or preaccess
--- config
location / {
    auth_oauth2_token_phase content;
}
--- must_die
--- error_log
"auth_oauth2_token_phase" directive takes "access" or "preaccess"
