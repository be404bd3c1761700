# DPoP-bound JWT access tokens from a real IdP, verified at the gateway
# (issues 23 and 24): npm oidc-provider (features.dPoP, resource indicators
# with accessTokenFormat 'jwt') issues an RFC 9068 token whose cnf.jkt is
# the thumbprint of the key that signed the token request's proof (npm
# `dpop`). The gateway verifies the JWT with the provider's JWK Set (written
# to its auth_oauth2_token_jwt_keys_file), with no call to the provider, and
# lets it through only with the DPoP scheme and a fresh proof by that key;
# the verdict kept in auth_oauth2_token_jwt_cache keeps its binding, so a
# cache hit is checked again.
#
# Needs node (20+), openssl and npm, like t/171: without them the file is
# skipped with the reason, or fails with TEST_OIDC_REQUIRED=1.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use OIDCProvider qw(:DEFAULT decode_jwt);
use OAuth2Test;
use File::Temp qw(tempdir);
use JSON::PP;

require_oidc_provider();
start_servers();
my $RESOURCE = 'https://orders.example';
my $op = start_oidc_provider(jwt_resource => $RESOURCE);
my $dir = tempdir(CLEANUP => 1);
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';

# Proofs by the key in $keyfile (made on first use), one per spec.
sub proofs {
    my ($keyfile, @specs) = @_;
    open my $fh, '>', "$dir/in.json" or die $!;
    print $fh encode_json({ keyfile => "$dir/$keyfile", proofs => \@specs });
    close $fh;
    my $out = `$NODE t/oidc/dpop.mjs < $dir/in.json`;
    die "t/oidc/dpop.mjs failed: $?" if $?;
    return decode_json($out);
}

my $jwks = $op->request({ path => '/jwks' });
is($jwks->{status}, 200, 'the provider serves its JWK Set');
my $keys_file = "$op->{dir}/provider-jwks.json";
{
    open my $fh, '>', $keys_file or die "$keys_file: $!";
    print $fh $jwks->{body};
    close $fh;
}

# The token request carries a proof (POST /token) by the client's key.
my $id = $op->{client_for}{client_credentials};
my $request_proof = proofs('client.jwk', { htm => 'POST', htu => $op->{token_endpoint} });
my $res = $op->request({ path => '/token', basic => [$id, $op->{clients}{$id}{client_secret}],
    headers => [['DPoP', $request_proof->{proofs}[0]]],
    form => [grant_type => 'client_credentials', scope => 'orders:read', resource => $RESOURCE] });
is($res->{status}, 200, 'oidc-provider issues a token for a DPoP token request with a resource')
    or diag($res->{body});
is($res->{json}{token_type}, 'DPoP', 'token_type DPoP');
my $jwt = $res->{json}{access_token} // '';
my ($header, $claims) = decode_jwt($jwt);
is($header->{typ}, 'at+jwt', 'a JWT access token (RFC 9068)');
is($claims->{aud}, $RESOURCE, 'for the resource');
is($claims->{cnf}{jkt}, $request_proof->{jkt}, 'bound to the client key (cnf.jkt is its thumbprint)');
my $mallory = proofs('mallory.jwk')->{jkt};
isnt($mallory, $request_proof->{jkt}, 'another key');

my $port = server_port();
my $config = <<"CONF";
auth_oauth2_token_jwt_issuer $op->{issuer};
auth_oauth2_token_jwt_keys_file $keys_file;
auth_oauth2_token_jwt_algorithms ES256;
add_header X-Error \$oauth2_token_error always;
add_header X-Cache-Status \$oauth2_token_cache_status always;
location /api/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_cache zone=jwt:1m max_ttl=60s;
    auth_oauth2_token_require_audience $RESOURCE;
    auth_oauth2_token_require_scope orders:read;
    proxy_set_header X-Jkt \$oauth2_token_dpop_jkt;
    proxy_pass http://backend;
}
CONF
idp_setup({});
start_nginx(block_from(name => 'oidc dpop jwt', config => $config, workers => 2)) or BAIL_OUT('nginx');
$op->log_clear;

my $htu = "http://localhost:$port/api/orders";
sub get {
    my ($scheme, $token, @dpop) = @_;
    my $r = http_request(raw_request('GET', '/api/orders', ["Host: localhost:$port",
        "Authorization: $scheme $token", map { "DPoP: $_" } @dpop]));
    my %h;
    $h{ lc $_->[0] } //= $_->[1] for @{ $r->{headers} };
    $r->{h} = \%h;
    $r->{challenge} = join ' | ', map { $_->[1] } grep { lc $_->[0] eq 'www-authenticate' } @{ $r->{headers} };
    return $r;
}
sub fresh { proofs($_[0] // 'client.jwk', { htm => 'GET', htu => $htu, token => $jwt })->{proofs}[0] }

my $first = fresh();
my $r = get('DPoP', $jwt, $first);
is($r->{status}, 200, 'the DPoP-bound JWT with a fresh proof by its key passes') or diag($r->{challenge});
is($r->{h}{'x-cache-status'}, 'MISS', 'verified here (not cached yet)');
my ($jkt) = map { $_->[1] } grep { lc $_->[0] eq 'x-jkt' } @{ backend_requests()->[-1]{headers} // [] };
is($jkt, $request_proof->{jkt}, '$oauth2_token_dpop_jkt is the key the provider bound the token to');

$r = get('Bearer', $jwt);
is($r->{status}, 401, 'the same token as Bearer (stolen): refused');
like($r->{challenge}, qr/DPoP realm="[^"]*", algs="[^"]+", error="invalid_token"/, 'invalid_token in the DPoP challenge');
is($r->{h}{'x-error'}, 'invalid_token', '$oauth2_token_error');

$r = get('Bearer', $jwt, fresh());
is($r->{status}, 401, 'as Bearer with a valid proof: refused too (RFC 9449 §7.2)');

$r = get('DPoP', $jwt, fresh('mallory.jwk'));
is($r->{status}, 401, 'a proof by another key: refused');
like($r->{challenge}, qr/error="invalid_dpop_proof", error_description="the DPoP proof's key is not the token's"/,
    'invalid_dpop_proof, the key is not the token\'s');

$r = get('DPoP', $jwt);
is($r->{status}, 401, 'no proof: refused');
like($r->{challenge}, qr/error="invalid_dpop_proof"/, 'invalid_dpop_proof');

# The verdict is cached: a hit, checked again.
$r = get('DPoP', $jwt, fresh());
is($r->{status}, 200, 'a second request with a fresh proof passes');
is($r->{h}{'x-cache-status'}, 'HIT', 'from the JWT cache');
$r = get('DPoP', $jwt, $first);
is($r->{status}, 401, 'a cache hit with a replayed proof: refused');
like($r->{challenge}, qr/error="invalid_dpop_proof", error_description="the DPoP proof was used before"/,
    'invalid_dpop_proof, used before');
is($r->{h}{'x-cache-status'}, 'HIT', 'on a cache hit');
$r = get('Bearer', $jwt);
is($r->{status}, 401, 'a cache hit as Bearer: refused');
is($r->{h}{'x-cache-status'}, 'HIT', 'on a cache hit too');

# A bearer JWT of the same provider (no proof at the token request) passes as Bearer.
my $bearer = $op->token(resource => $RESOURCE);
ok(!exists((decode_jwt($bearer))[1]{cnf}), 'a token requested without a proof is unbound');
is(get('Bearer', $bearer)->{status}, 200, 'an unbound JWT passes as Bearer');
is(get('DPoP', $bearer, fresh())->{status}, 401, 'an unbound JWT with the DPoP scheme: refused');

is(scalar(grep { $_->{path} =~ /introspection/ } $op->log), 0, 'no call to the provider');
# nginx's own debug lines dump the request headers; the module's lines never hold the token.
my $log = join "\n", grep { /auth_oauth2_token/ } split /\n/, error_log_text();
like($log, qr/auth_oauth2_token: .*DPoP proof/, 'the module logged the refused proofs');
unlike($log, qr/\Q$jwt\E/, 'without the token');

done_testing();
