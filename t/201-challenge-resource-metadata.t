# auth_oauth2_token_resource_metadata_url: RFC 9728 §5.1's resource_metadata
# parameter in every challenge of a protected location (401 and 403, with and
# without error), after the RFC 6750 parameters; inherited, turned off, left
# to an operator's own challenge, left out (and logged) when it evaluates to
# no URL; kept through an error_page; refused by nginx -t when it is no URL.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $config = <<'CONF';
auth_oauth2_token_resource_metadata_url https://$host/.well-known/oauth-protected-resource/mcp;
location = /.well-known/oauth-protected-resource/mcp {
    auth_oauth2_token_resource_metadata resource=https://$host/mcp
        authorization_servers=https://as.example.com;
}
location /mcp {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_scope mcp:tools;
    auth_oauth2_token_require_audience https://mcp.example.com/mcp;
    proxy_pass http://backend;
}
location /plain {
    auth_oauth2_token_resource_metadata_url off;
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location /own {
    auth_oauth2_token_www_authenticate 'Bearer realm="own"';
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location /odd {
    auth_oauth2_token_resource_metadata_url $arg_u;
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location /paged {
    error_page 401 = @json401;
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location @json401 {
    default_type application/json;
    return 401 '{"error":"$oauth2_token_error"}';
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: no token: the challenge names the metadata, no error
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
--- idp_calls: 0

=== TEST 2: the document the challenge points at names the resource
--- request
GET /.well-known/oauth-protected-resource/mcp
--- more_headers
Host: mcp.example.com
--- error_code: 200
--- response_body: {"resource":"https://mcp.example.com/mcp","authorization_servers":["https://as.example.com"],"dpop_signing_alg_values_supported":["RS256","PS256","ES256","EdDSA"]}

=== TEST 3: an inactive token: invalid_token, then resource_metadata
--- idp
{"t": {"json": {"active": false}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"

=== TEST 4: a malformed token: invalid_token with its description
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer a,b
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer realm="api", error="invalid_token", error_description="[^"]+", resource_metadata="https://mcp\.example\.com/\.well-known/oauth-protected-resource/mcp"$

=== TEST 5: a token for another resource: 401 with the audience's description
--- idp
{"t": {"json": {"active": true, "scope": "mcp:tools", "aud": "https://other.example.com/mcp"}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token", error_description="the token is not meant for this resource", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
--- backend_calls: 0

=== TEST 6: a scope missing: 403 insufficient_scope names it, and the metadata
--- idp
{"t": {"json": {"active": true, "scope": "mcp:read", "aud": "https://mcp.example.com/mcp"}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope", scope="mcp:tools", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"

=== TEST 7: a token for this resource passes
--- idp
{"t": {"json": {"active": true, "scope": "mcp:tools", "aud": "https://mcp.example.com/mcp"}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 200
--- response_headers
!WWW-Authenticate
--- backend_calls: 1

=== TEST 8: off in a location: the RFC 6750 challenge alone
--- request
GET /plain
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"

=== TEST 9: an operator's own challenge is sent as written
--- request
GET /own
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="own"

=== TEST 10: a value with a raw quote is no URL: left out, never sent unescaped
--- request
GET /odd?u=https://h/"x
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"

=== TEST 11: a value that is no URL is left out of the challenge and logged
--- request
GET /odd?u=notaurl
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- error_log
auth_oauth2_token_resource_metadata_url is not a URL here

=== TEST 12: a variable's URL
--- request
GET /odd?u=https://meta.example/.well-known/oauth-protected-resource/odd
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", resource_metadata="https://meta.example/.well-known/oauth-protected-resource/odd"

=== TEST 13: an error_page keeps the challenge
--- request
GET /paged
--- more_headers
Host: mcp.example.com
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
Content-Type: application/json
--- response_body: {"error":"missing_token"}

=== TEST 14: nginx -t refuses a value that is no URL
--- config
location / {
    auth_oauth2_token_resource_metadata_url /.well-known/oauth-protected-resource;
}
--- must_die
--- error_log
"auth_oauth2_token_resource_metadata_url" directive "/.well-known/oauth-protected-resource" is not an http or https URL

=== TEST 15: once per block
--- config
location / {
    auth_oauth2_token_resource_metadata_url https://a.example/.well-known/oauth-protected-resource;
    auth_oauth2_token_resource_metadata_url off;
}
--- must_die
--- error_log
"auth_oauth2_token_resource_metadata_url" directive is duplicate
