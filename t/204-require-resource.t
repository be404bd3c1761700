# auth_oauth2_token_require_resource: the token's aud (a string or an array)
# must name this resource (RFC 8707 resource indicators), the URL written
# with variables so that one configuration serves many hosts, compared after
# RFC 3986's normalisation (scheme and host without case, default port, empty
# path); the path exact. Checked on cache hits too: the same cached answer
# passes for the host it names and is refused for another. nginx -t refuses a
# URL that names no resource, and the directive where tokens are only exchanged.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More ();
use JSON::PP;

my $config = <<'CONF';
location /mcp {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_resource https://$host/mcp;
    add_header X-Error $oauth2_token_error always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

my $http = 'auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=60s;';

# One cached answer, two hosts: it names a.example.com's resource only.
start_nginx(block_from(http_config => $http, config => $config));
idp_setup({ t => { json => { active => JSON::PP::true, aud => 'https://a.example.com/mcp', exp => time + 300 } } });
sub status_for {
    my ($host) = @_;
    return http_request({ method => 'GET', uri => '/mcp', headers => ["Host: $host", 'Authorization: Bearer t'] })->{status};
}
Test::More::is(status_for('a.example.com'), 200, 'the host whose resource aud names passes');
Test::More::is(status_for('b.example.com'), 401, 'another host, the same cached answer: refused');
Test::More::is(status_for('A.Example.COM'), 200, 'the host compared without case');
Test::More::is(scalar @{ idp_requests() }, 1, 'one IdP call: the other answers came from the cache');
stop_nginx();

run_tests(default_config => $config, default_http_config => $http);

__DATA__

=== TEST 1: aud names the resource: passes
--- idp
{"t": {"json": {"active": true, "aud": "https://mcp.example.com/mcp"}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 200
--- backend_calls: 1

=== TEST 2: in an array, written otherwise (case, default port)
--- idp
{"t": {"json": {"active": true, "aud": ["other", "HTTPS://MCP.Example.com:443/mcp"]}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 200

=== TEST 3: another path is another resource
--- idp
{"t": {"json": {"active": true, "aud": "https://mcp.example.com/mcp/"}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token", error_description="the token is not meant for this resource"
X-Error: invalid_token
--- backend_calls: 0

=== TEST 4: another scheme or port is another resource
--- idp
{"t": {"json": {"active": true, "aud": ["http://mcp.example.com/mcp", "https://mcp.example.com:8443/mcp"]}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 401

=== TEST 5: no aud
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /mcp
--- more_headers
Host: mcp.example.com
Authorization: Bearer t
--- error_code: 401

=== TEST 6: nginx -t refuses a URL that names no resource
--- config
location / { auth_oauth2_token_require_resource https://user@h/mcp; }
--- must_die
--- error_log
"auth_oauth2_token_require_resource" directive "https://user@h/mcp" is not an http or https URL

=== TEST 7: nor where tokens are only exchanged
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_resource https://$host/mcp;
}
--- must_die
--- error_log
"auth_oauth2_token_require_resource" needs "auth_oauth2_token_introspect on"
