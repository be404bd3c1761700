# The official MCP SDK (npm @modelcontextprotocol/sdk, t/mcp/) as the client,
# against an MCP server from the same SDK (plain HTTP, no OAuth of its own)
# behind the gateway, with npm oidc-provider as the authorization server
# (resource indicators: a client_credentials token for the resource is an RFC
# 9068 JWT whose aud is the resource). The SDK's client is given the server's
# URL and its client credentials only: it must learn everything else from the
# gateway (the 401's resource_metadata, the RFC 9728 document naming the
# authorization server), get a token for the resource (RFC 8707), and call a
# tool; the gateway checks the JWT locally. A token for another resource, and
# none, are refused.
#
# Needs node (20+), openssl and npm, like t/120 and t/171: without them the
# file is skipped with the reason, or fails with TEST_OIDC_REQUIRED=1.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use OIDCProvider qw(:DEFAULT decode_jwt);
use OAuth2Test;
use JSON::PP;
use Cwd qw(abs_path);
use Time::HiRes qw(sleep);

require_oidc_provider();
my $MCP = abs_path('t/mcp');

# t/mcp's packages, as its lockfile pins them.
sub mcp_deps_ok {
    my $lock = eval { decode_json(do { local (@ARGV, $/) = ("$MCP/package-lock.json"); <> }) } or return 0;
    my $want = $lock->{packages}{'node_modules/@modelcontextprotocol/sdk'}{version} or return 0;
    my $have = eval { decode_json(do { local (@ARGV, $/) = ("$MCP/node_modules/\@modelcontextprotocol/sdk/package.json"); <> }) };
    return $have && $have->{version} eq $want;
}
unless (mcp_deps_ok()) {
    note('t/mcp: running npm ci');
    system("cd '$MCP' && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1");
    unless (mcp_deps_ok()) {
        my $why = 't/mcp: `npm ci` did not install @modelcontextprotocol/sdk';
        BAIL_OUT($why) if $ENV{TEST_OIDC_REQUIRED};
        plan skip_all => $why;
    }
}

start_servers();
my $PORT = server_port();
my $RESOURCE = "http://127.0.0.1:$PORT/mcp";
my $METADATA = "http://127.0.0.1:$PORT/.well-known/oauth-protected-resource/mcp";
my $op = start_oidc_provider(jwt_resource => $RESOURCE);
note("oidc-provider $op->{version} on Node.js $op->{node} at $op->{issuer}");

my $jwks = $op->request({ path => '/jwks' });
is($jwks->{status}, 200, 'the provider serves its JWK Set');
my $keys_file = "$op->{dir}/provider-jwks.json";
{
    open my $fh, '>', $keys_file or die "$keys_file: $!";
    print $fh $jwks->{body};
    close $fh;
}

# The MCP server.
my $port_file = "$op->{dir}/mcp-port";
my $server_pid = fork // die "fork: $!";
if (!$server_pid) {
    open STDIN, '<', '/dev/null';
    open STDOUT, '>>', "$op->{dir}/mcp-server.log";
    open STDERR, '>&', \*STDOUT;
    exec 'node', "$MCP/server.mjs", $port_file or POSIX::_exit(127);
}
END { kill 'TERM', $server_pid if $server_pid }
for (1 .. 100) { last if -s $port_file; sleep 0.1 }
my $mcp_port = do { local (@ARGV, $/) = ($port_file); <> } or BAIL_OUT('the MCP server did not start');

my $http = <<"CONF";
auth_oauth2_token_jwt_issuer $op->{issuer};
auth_oauth2_token_jwt_keys_file $keys_file;
auth_oauth2_token_jwt_algorithms ES256;
upstream mcp_server {
    server 127.0.0.1:$mcp_port;
    keepalive 4;
}
CONF

my $config = <<"CONF";
auth_oauth2_token_resource_metadata_url http://\$host:\$server_port/.well-known/oauth-protected-resource\$uri;
location = /.well-known/oauth-protected-resource/mcp {
    auth_oauth2_token_resource_metadata resource=http://\$host:\$server_port/mcp
        authorization_servers=$op->{issuer} bearer_methods_supported=header;
}
location = /mcp {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_require_audience $RESOURCE;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_pass http://mcp_server;
}
location = /.well-known/oauth-protected-resource/billing/mcp {
    auth_oauth2_token_resource_metadata resource=http://\$host:\$server_port/billing/mcp
        authorization_servers=$op->{issuer};
}
location = /billing/mcp {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_require_audience http://127.0.0.1:$PORT/billing/mcp;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_pass http://mcp_server;
}
CONF
ok(start_nginx(block_from(http_config => $http, config => $config)), 'the gateway starts');

sub mcp_client {
    my (@args) = @_;
    local $ENV{NODE_EXTRA_CA_CERTS} = $op->{ca};
    local $ENV{NODE_NO_WARNINGS} = 1;
    my $out = `node '$MCP/client.mjs' @args 2>&1`;
    my ($line) = grep { /^\{/ } split /\n/, $out;
    my $r = eval { decode_json($line // '') };
    diag("client said: $out") unless $r;
    return $r // { ok => 0, error => $out };
}

my $id = $op->{client_for}{client_credentials};
my $secret = $op->{clients}{$id}{client_secret};
$op->log_clear;

# The whole discovery, by the SDK.
my $seen;
my $r = mcp_client("http://127.0.0.1:$PORT/mcp", $op->{issuer}, $id, $secret);
ok($r->{ok}, 'the SDK client discovered the authorization server, got a token and called the tool')
    or diag(explain($r));
my @access = do { open my $fh, '<', prefix() . '/logs/access.log' or die $!; map { /"(\w+ \S+) HTTP\/1\.1" (\d+)/ ? "$1 $2" : () } <$fh> };
is($access[0], 'POST /mcp 401', 'the SDK first called the MCP server and got 401');
ok((grep { $_ eq 'GET /.well-known/oauth-protected-resource/mcp 200' } @access), 'then read the metadata the challenge named')
    or diag(join("\n", @access));
ok((grep { $_ eq 'POST /mcp 200' } @access), 'and called the MCP server with its token');
$seen = eval { decode_json($r->{text} // '') } // {};
is($seen->{say}, 'hello', 'the tool answered through the gateway');
like($seen->{authorization} // '', qr/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/, 'the MCP server got the JWT the gateway checked');
my (undef, $claims) = decode_jwt($r->{token} // 'x.e30.x');
is($claims->{aud}, $RESOURCE, 'the token was issued for the resource the metadata names (RFC 8707)');
my @token_calls = grep { ($_->{grant_type} // '') eq 'client_credentials' } $op->log;
is(scalar(@token_calls), 1, 'one token request, client_credentials');
is($token_calls[0]{resource}, $RESOURCE, 'with the resource indicator the metadata names') if @token_calls;
is($token_calls[0]{basic_client_id}, $id, 'authenticated with the client credentials given') if @token_calls;

# The same token where another resource is served: refused, with a challenge.
my $token = $r->{token} // 'none';
my $other = mcp_client("http://127.0.0.1:$PORT/billing/mcp", '--token', $token);
ok(!$other->{ok}, 'a token for another resource is refused');
like($other->{error} // '', qr/401|Unauthorized/i, 'with 401');
my $raw = http_request({ method => 'POST', uri => '/billing/mcp',
    headers => ["Host: 127.0.0.1:$PORT", "Authorization: Bearer $token", 'Content-Type: application/json', 'Accept: application/json, text/event-stream'],
    body => '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
is($raw->{status}, 401, 'the gateway answers 401 to the token for /mcp at /billing/mcp');
is(join('', OAuth2Test::header_values($raw->{headers}, 'WWW-Authenticate')),
    qq{Bearer realm="api", error="invalid_token", error_description="the token is not meant for this resource", resource_metadata="http://127.0.0.1:$PORT/.well-known/oauth-protected-resource/billing/mcp"},
    'naming the metadata of /billing/mcp');

# No token at all.
my $none = mcp_client("http://127.0.0.1:$PORT/mcp", '--token', 'not-a-jwt');
ok(!$none->{ok}, 'an opaque token is refused at /mcp');

stop_nginx();
done_testing();
