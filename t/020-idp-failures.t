# An IdP that is down, slow or talks garbage: a 5xx the operator can tell
# apart, one error-log line naming the cause, never an open door.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

# Every block shares this location layout; only the IdP's behaviour changes.
my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_read_timeout 1s;
    subrequest_output_buffer_size 128k;
    proxy_pass http://idp/introspect;
}
location = /_introspect_down {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_CLOSED_PORT/introspect;
}
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: 200 with a body that is not JSON is 502
--- idp
{"t": {"body": "<html>maintenance</html>", "content_type": "text/html"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection response is not a JSON object

=== TEST 2: JSON without a boolean active is 502
--- idp
{"t": {"json": {"active": "true", "sub": "alice"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection response has no boolean "active" member

=== TEST 3: truncated JSON is 502
--- idp
{"t": {"mode": "truncate"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
/auth_oauth2_token: introspection response (incomplete|is not a JSON object)/

=== TEST 4: a body over 64 KiB is 502
--- idp
{"t": {"mode": "oversize", "size": 70000}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection response of 70000 bytes exceeds the 65536-byte limit

=== TEST 5: wrong Content-Type with valid JSON is judged by its body
--- idp
{"t": {"json": {"active": false}, "content_type": "text/plain"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- backend_calls: 0

=== TEST 6: IdP 401 means our client credentials were rejected: 502
--- idp
{"t": {"status": 401, "json": {"error": "invalid_client"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection endpoint answered 401: client credentials rejected

=== TEST 7: IdP 403 is logged as rejected credentials too
--- idp
{"t": {"status": 403, "body": "forbidden"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- error_log
auth_oauth2_token: introspection endpoint answered 403: client credentials rejected

=== TEST 8: IdP 500 is 502
--- idp
{"t": {"status": 500, "body": "boom"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection endpoint answered 500

=== TEST 9: IdP 503 is passed on as 503
--- idp
{"t": {"status": 503, "body": "busy"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 503
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection endpoint answered 503: service unavailable

=== TEST 10: connection refused is 502
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect_down;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location = /_introspect_down {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_CLOSED_PORT/introspect;
}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection endpoint unreachable or connection failed

=== TEST 11: connection closed without an answer is 502
--- idp
{"t": {"mode": "close"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection endpoint unreachable or connection failed

=== TEST 12: connection reset is 502
--- idp
{"t": {"mode": "reset"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection endpoint unreachable or connection failed

=== TEST 13: an IdP that accepts and never answers is 504 after proxy_read_timeout
--- idp
{"t": {"mode": "hang"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 504
--- backend_calls: 0
--- error_log
auth_oauth2_token: introspection endpoint timed out

=== TEST 14: a slow answer within the timeout still counts
--- idp
{"t": {"delay": 0.3, "json": {"active": true, "sub": "slow"}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- backend_calls: 1

=== TEST 15: garbage instead of HTTP is 502
--- idp
{"t": {"mode": "garbage"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- backend_calls: 0

=== TEST 16: each failure is logged once
--- idp
{"t": {"body": "not json"}}
--- request
GET /
--- more_headers
Authorization: Bearer t
--- error_code: 502
--- error_log_count
auth_oauth2_token: introspection response is not a JSON object: 1
