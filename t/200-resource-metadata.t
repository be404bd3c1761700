# auth_oauth2_token_resource_metadata: RFC 9728 Protected Resource Metadata
# served from the configuration. The document (members of RFC 9728 §2, values
# with variables), its headers (application/json, Cache-Control, CORS), HEAD,
# a CORS preflight, 405 with Allow, a value that evaluates to no URL, the
# path-inserted location of §3.1, the document public where the server checks
# tokens, the DPoP members from the location's DPoP settings, and
# configuration mistakes failing nginx -t.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $config = <<'CONF';
location = /.well-known/oauth-protected-resource/mcp {
    auth_oauth2_token_resource_metadata
        resource=https://$host/mcp
        authorization_servers=https://as.example.com
        authorization_servers=https://as2.example.com/realms/$arg_realm
        "scopes_supported=mcp:tools mcp:read"
        bearer_methods_supported=header
        "resource_name=Example \"MCP\" server"
        resource_documentation=https://docs.example.com/mcp
        max_age=600;
}
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata resource=https://$host;
}
location = /bad {
    auth_oauth2_token_resource_metadata resource=$arg_r;
}
location /mcp {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

run_tests(default_config => $config);

__DATA__

=== TEST 1: the document of a resource with a path, values from variables
--- request
GET /.well-known/oauth-protected-resource/mcp?realm=r1
--- more_headers
Host: api.example.com
--- error_code: 200
--- response_headers
Content-Type: application/json
Cache-Control: public, max-age=600
Access-Control-Allow-Origin: *
--- response_body: {"resource":"https://api.example.com/mcp","authorization_servers":["https://as.example.com","https://as2.example.com/realms/r1"],"scopes_supported":["mcp:tools","mcp:read"],"bearer_methods_supported":["header"],"resource_name":"Example \"MCP\" server","resource_documentation":"https://docs.example.com/mcp","dpop_signing_alg_values_supported":["RS256","PS256","ES256","EdDSA"]}
--- idp_calls: 0

=== TEST 2: a resource without a path is at the well-known URI itself
--- request
GET /.well-known/oauth-protected-resource
--- more_headers
Host: api.example.com
--- error_code: 200
--- response_headers
Content-Type: application/json
Cache-Control: public, max-age=3600
--- response_body: {"resource":"https://api.example.com","dpop_signing_alg_values_supported":["RS256","PS256","ES256","EdDSA"]}

=== TEST 3: HEAD gets the headers without the body
--- request
HEAD /.well-known/oauth-protected-resource/mcp
--- error_code: 200
--- response_headers
Content-Type: application/json
Access-Control-Allow-Origin: *
--- response_body:

=== TEST 4: other methods get 405 with Allow
--- request
POST /.well-known/oauth-protected-resource/mcp

{"resource":"https://evil.example"}
--- error_code: 405
--- response_headers
Allow: GET, HEAD, OPTIONS
--- response_body_like: 405 Not Allowed

=== TEST 5: DELETE too
--- request
DELETE /.well-known/oauth-protected-resource
--- error_code: 405
--- response_headers
Allow: GET, HEAD, OPTIONS

=== TEST 6: a CORS preflight is answered for browser-based clients
--- request
OPTIONS /.well-known/oauth-protected-resource/mcp
--- more_headers
Origin: https://app.example
Access-Control-Request-Method: GET
Access-Control-Request-Headers: mcp-protocol-version
--- error_code: 204
--- response_headers
Access-Control-Allow-Origin: *
Access-Control-Allow-Methods: GET, HEAD, OPTIONS
Access-Control-Allow-Headers: *
Access-Control-Max-Age: 86400

=== TEST 7: a value that evaluates to no URL is not served
--- request
GET /bad?r=javascript:alert(1)
--- error_code: 500
--- error_log
resource metadata not served: resource is not an http or https URL

=== TEST 8: the protected resource is not touched by the metadata location
--- request
GET /mcp
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"

=== TEST 9: the document is public where the server checks tokens
--- config
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata resource=https://$host;
}
location / { proxy_pass http://backend; }
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- request
GET /.well-known/oauth-protected-resource
--- more_headers
Host: api.example.com
--- error_code: 200
--- response_body: {"resource":"https://api.example.com","dpop_signing_alg_values_supported":["RS256","PS256","ES256","EdDSA"]}
--- idp_calls: 0

=== TEST 9b: the DPoP members follow the server's DPoP settings
--- config
auth_oauth2_token_dpop_require on;
auth_oauth2_token_dpop_algorithms ES256 EdDSA;
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata resource=https://$host;
}
--- request
GET /.well-known/oauth-protected-resource
--- more_headers
Host: api.example.com
--- error_code: 200
--- response_body: {"resource":"https://api.example.com","dpop_signing_alg_values_supported":["ES256","EdDSA"],"dpop_bound_access_tokens_required":true}

=== TEST 10: while the rest of the server asks for a token
--- config
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata resource=https://$host;
}
location / { proxy_pass http://backend; }
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- request
GET /anything
--- error_code: 401

=== TEST 11: resource= is required
--- config
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata authorization_servers=https://as.example.com;
}
--- must_die
--- error_log
"auth_oauth2_token_resource_metadata" directive needs resource=

=== TEST 12: a static URL is checked by nginx -t
--- config
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata resource=https://api.example.com authorization_servers=as.example.com;
}
--- must_die
--- error_log
"auth_oauth2_token_resource_metadata" directive authorization_servers=: "as.example.com" is not an http or https URL

=== TEST 13: unknown parameters and methods are refused
--- config
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata resource=https://a.example bearer_methods_supported=header,cookie;
}
--- must_die
--- error_log
"auth_oauth2_token_resource_metadata" directive bearer_methods_supported=: "cookie" is not header, body or query

=== TEST 14: only in a location, once
--- config
location = /.well-known/oauth-protected-resource {
    auth_oauth2_token_resource_metadata resource=https://a.example;
    auth_oauth2_token_resource_metadata resource=https://b.example;
}
--- must_die
--- error_log
"auth_oauth2_token_resource_metadata" directive is duplicate
