# Issue 29 item 3: docs/MIGRATION.md, section 2 ("From Curity's phantom token
# module"), row by row: what this module does in each situation of the
# "What changes for the client" table, with the guide's "before"
# configuration (Curity's directives, the internal location supplying the
# IdP's headers and credentials) minus its proxy_cache. Titles name the row
# (t/194 keeps the guide's rows and these titles in step).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;

my $config = <<'CONF';
location /api/ {
    phantom_token on;
    phantom_token_introspection_endpoint idp_introspect;
    phantom_token_realm "orders api";
    phantom_token_scopes "orders:read";
    proxy_pass http://backend;
}
location idp_introspect {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Accept "application/jwt";
    proxy_set_header Content-Type "application/x-www-form-urlencoded";
    proxy_set_header Authorization "Basic YXBpLWdhdGV3YXk6ZXhhbXBsZS1zZWNyZXQ=";
    proxy_read_timeout 1s;
    proxy_pass http://idp/oauth/v2/oauth-introspect;
}
CONF

# Row "the JWT is larger than the internal location's proxy_buffer_size
# (uncached)": a 40 KiB JWT, far over the default 4k/8k buffers.
{
    my $payload = '{"sub":"alice","pad":"' . ('x' x 30000) . '"}';
    require MIME::Base64;
    my $enc = sub { (my $e = MIME::Base64::encode_base64($_[0], '')) =~ tr{+/=}{-_}d; $e };
    my $jwt = $enc->('{"alg":"RS256"}') . '.' . $enc->($payload) . '.' . $enc->('s' x 256);
    cmp_ok(length $jwt, '>', 40_000, 'the JWT is over 40,000 bytes');
    idp_setup({ big => { body => $jwt, content_type => 'application/jwt' } });
    start_nginx(block_from(name => 'large JWT', config => $config)) or BAIL_OUT('nginx');
    my $r = http_request({ method => 'GET', uri => '/api/orders', headers => ['Authorization: Bearer big'] });
    is($r->{status}, 200,
        'row [the JWT is larger than the internal location\'s proxy_buffer_size (uncached)]: passes');
    my ($got) = map { $_->[1] } grep { lc $_->[0] eq 'authorization' } @{ backend_requests()->[-1]{headers} // [] };
    is($got, "Bearer $jwt", 'row [the JWT is larger than the internal location\'s proxy_buffer_size (uncached)]: the whole JWT reaches the backend');
    stop_nginx();
}

run_tests(default_config => $config);

__DATA__

=== TEST 1: row [no token, or not Bearer]: 401 with the realm and the announced scopes
--- request
GET /api/orders
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="orders api", scope="orders:read"
--- idp_calls: 0

=== TEST 2: row [no token, or not Bearer]: another scheme is the same
--- request
GET /api/orders
--- more_headers
Authorization: Basic YTpi
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="orders api", scope="orders:read"
--- idp_calls: 0

=== TEST 3: row [the IdP answers 204 (token not active)]: 401 with error="invalid_token" added
--- idp
{"t": {"status": 204, "body": ""}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="orders api", scope="orders:read", error="invalid_token"
--- backend_calls: 0

=== TEST 4: row [the IdP answers 200 with something that is not a JWT]: 502, nothing forwarded
--- idp
{"t": {"json": {"active": false}, "content_type": "application/jwt"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0

=== TEST 5: row [the IdP answers 503]: 503
--- idp
{"t": {"status": 503, "body": "busy"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 503
--- backend_calls: 0

=== TEST 6: row [the IdP answers 401, 403, 404 or 5xx, or cannot be reached]: 401 is 502
--- idp
{"t": {"status": 401, "body": ""}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 7: row [the IdP answers 401, 403, 404 or 5xx, or cannot be reached]: 404 is 502
--- idp
{"t": {"status": 404, "body": "no"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 8: row [the IdP answers 401, 403, 404 or 5xx, or cannot be reached]: 500 is 502
--- idp
{"t": {"status": 500, "body": "oops"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 9: row [the IdP answers 401, 403, 404 or 5xx, or cannot be reached]: unreachable is 502
--- config
location /api/ {
    phantom_token on;
    phantom_token_introspection_endpoint idp_introspect;
    proxy_pass http://backend;
}
location idp_introspect {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Authorization "Basic YXBpLWdhdGV3YXk6ZXhhbXBsZS1zZWNyZXQ=";
    proxy_pass http://127.0.0.1:$TEST_NGINX_CLOSED_PORT/oauth/v2/oauth-introspect;
}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0

=== TEST 10: row [the IdP answers another 4xx]: 502 (Curity's module: 500)
--- idp
{"t": {"status": 400, "json": {"error": "invalid_request"}}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502

=== TEST 11: row [the IdP times out]: 504
--- idp
{"t": {"mode": "hang"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 504
--- backend_calls: 0

=== TEST 12: row [error bodies (500, 502, 503)]: nginx's error page, not JSON
--- idp
{"t": {"status": 500, "body": "oops"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- response_headers_like
Content-Type: ^text/html
--- response_body_like
<title>502 Bad Gateway</title>

=== TEST 13: row [error bodies (500, 502, 503)]: error_page gives them JSON bodies (nginx-conf/json-errors.conf)
--- config
location /api/ {
    phantom_token on;
    phantom_token_introspection_endpoint idp_introspect;
    error_page 502 = @json502;
    proxy_pass http://backend;
}
location @json502 {
    default_type application/json;
    return 502 '{"code":"server_error","message":"$oauth2_token_error"}';
}
location idp_introspect {
    internal;
    proxy_pass_request_headers off;
    proxy_set_header Authorization "Basic YXBpLWdhdGV3YXk6ZXhhbXBsZS1zZWNyZXQ=";
    proxy_pass http://idp/oauth/v2/oauth-introspect;
}
--- idp
{"t": {"status": 500, "body": "oops"}}
--- request
GET /api/orders
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- response_body
{"code":"server_error","message":"idp_error"}

=== TEST 14: row [OPTIONS]: checked like any method: 401 without a token
--- request
OPTIONS /api/orders
--- more_headers
Origin: https://app.example
Access-Control-Request-Method: POST
--- error_code: 401
--- idp_calls: 0
--- backend_calls: 0

=== TEST 15: row [OPTIONS]: auth_oauth2_token_pass_options on lets a tokenless preflight reach the backend
--- config
location /api/ {
    phantom_token on;
    phantom_token_introspection_endpoint idp_introspect;
    auth_oauth2_token_pass_options on;
    proxy_pass http://backend;
}
location idp_introspect { internal; proxy_pass http://idp/oauth/v2/oauth-introspect; }
--- request
OPTIONS /api/orders
--- more_headers
Origin: https://app.example
Access-Control-Request-Method: POST
--- error_code: 200
--- idp_calls: 0
--- backend_calls: 1
