# JWT access tokens from a real authorization server, checked at the gateway:
# npm oidc-provider (t/oidc/) issues RFC 9068 tokens for a resource indicator
# (ES256, typ at+jwt, aud = the resource); its JWK Set, fetched once from
# its jwks_uri, is the gateway's auth_oauth2_token_jwt_keys_file. Its tokens
# pass with their claims, with no call to the provider; its opaque tokens,
# its tokens for another audience and a forged one are refused, the forged
# one without a call to the provider also where the location introspects.
#
# Needs node (20+), openssl and npm, like t/120: without them the file is
# skipped with the reason, or fails with TEST_OIDC_REQUIRED=1.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use OIDCProvider qw(:DEFAULT decode_jwt);
use OAuth2Test;
use JSON::PP;

require_oidc_provider();
start_servers();
my $RESOURCE = 'https://orders.example';
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

my $jwt = $op->token(resource => $RESOURCE);
my ($header, $claims) = decode_jwt($jwt);
is($header->{typ}, 'at+jwt', 'the provider types its JWT access tokens at+jwt');
is($header->{alg}, 'ES256', 'signed with ES256');
is($claims->{iss}, $op->{issuer}, 'iss is the issuer');
my $opaque = $op->token;
is(scalar(split /\./, $opaque), 1, 'without a resource the token is opaque');

my $id = $op->{client_for}{client_secret_basic};
my $secret = $op->{clients}{$id}{client_secret};
my $config = <<"CONF";
auth_oauth2_token_jwt_issuer $op->{issuer};
auth_oauth2_token_jwt_keys_file $keys_file;
auth_oauth2_token_jwt_algorithms ES256;
add_header X-Error \$oauth2_token_error always;
location /api/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_require_audience $RESOURCE;
    auth_oauth2_token_require_scope orders:read;
    proxy_set_header X-Token-Client \$oauth2_token_client_id;
    proxy_set_header X-Token-Scope \$oauth2_token_scope;
    proxy_pass http://backend;
}
location /other/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_require_audience https://billing.example;
    proxy_pass http://backend;
}
location /both/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_require_audience $RESOURCE;
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id $id;
    auth_oauth2_token_client_secret "$secret";
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass $op->{introspection_endpoint};
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $op->{ca};
    proxy_ssl_name localhost;
}
CONF

sub get {
    my ($uri, $token) = @_;
    my $r = http_request({ method => 'GET', uri => $uri, headers => ["Authorization: Bearer $token"] });
    my %h = map { (lc $_->[0] => $_->[1]) } @{ $r->{headers} };
    $r->{h} = \%h;
    return $r;
}

sub backend_header {
    my ($name) = @_;
    my $last = backend_requests()->[-1] or return undef;
    my ($v) = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $last->{headers} };
    return $v;
}

idp_setup({});
start_nginx(block_from(name => 'oidc-jwt', config => $config)) or BAIL_OUT('nginx');
$op->log_clear;

my $r = get('/api/orders', $jwt);
is($r->{status}, 200, 'a JWT access token of the provider passes');
is(backend_header('X-Token-Client'), $claims->{client_id}, '$oauth2_token_client_id is its client_id');
like(backend_header('X-Token-Scope') // '', qr/\borders:read\b/, '$oauth2_token_scope holds its scope');
is(scalar(grep { $_->{path} =~ /introspection/ } $op->log), 0, 'no call to the provider');

$r = get('/api/orders', $opaque);
is($r->{status}, 401, 'an opaque token of the provider: 401 in a JWT-only location');
like($r->{h}{'www-authenticate'} // '', qr/error_description="the token is not a compact JWS"/, 'with its reason');

$r = get('/other/x', $jwt);
is($r->{status}, 401, 'a token for another resource: 401');
like($r->{h}{'www-authenticate'} // '', qr/error_description="the token is not meant for this resource"/,
    'the challenge says so');

my $unscoped = $op->token(resource => $RESOURCE, scope => 'orders:write');
is(get('/api/orders', $unscoped)->{status}, 403, 'a JWT without the required scope: 403');

# With introspection too, a verified JWT goes on to the provider, which
# refuses to introspect its own JWT access tokens (400 unsupported_token_type:
# "Structured JWT Tokens cannot be introspected"), so the gateway answers 502;
# a forged JWT never gets that far. (Revocation seen through introspection is
# t/170's, with the test IdP.)
$op->log_clear;
is(get('/both/x', $jwt)->{status}, 502, 'introspected too: the provider is asked, and cannot introspect JWTs');
my @asked = grep { $_->{path} =~ /introspection/ } $op->log;
is(scalar @asked, 1, 'one introspection call');
is($asked[0]{error} // '', 'unsupported_token_type', 'the provider said why');
my $forged = $jwt;
substr($forged, -3, 1) = substr($forged, -3, 1) eq 'A' ? 'B' : 'A';
$op->log_clear;
is(get('/both/x', $forged)->{status}, 401, 'a forged JWT is refused where the location introspects');
is(scalar(grep { $_->{path} =~ /introspection/ } $op->log), 0, 'and never reaches the provider');
stop_nginx();

done_testing();
