# DPoP-bound tokens from a real IdP: npm oidc-provider (features.dPoP) issues
# a client_credentials token bound to a key whose proof the npm `dpop`
# package made for the token request; the gateway introspects it (the answer
# carries cnf.jkt) and lets it through only with the DPoP scheme and a fresh
# proof by that key; a bearer token of the same provider passes as before.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use OIDCProvider;
use OAuth2Test;
use File::Temp qw(tempdir);
use JSON::PP;

require_oidc_provider();
start_servers();
my $op = start_oidc_provider();
my $dir = tempdir(CLEANUP => 1);
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';

sub proofs {
    my (@specs) = @_;
    open my $fh, '>', "$dir/in.json" or die $!;
    print $fh encode_json({ keyfile => "$dir/client.jwk", proofs => \@specs });
    close $fh;
    my $out = `$NODE t/oidc/dpop.mjs < $dir/in.json`;
    die "t/oidc/dpop.mjs failed: $?" if $?;
    return decode_json($out);
}

# A DPoP-bound token: the token request carries a proof for POST /token.
my $id = $op->{client_for}{client_credentials};
my $p = proofs({ htm => 'POST', htu => $op->{token_endpoint} });
my $res = $op->request({ path => '/token', basic => [$id, $op->{clients}{$id}{client_secret}],
    headers => [['DPoP', $p->{proofs}[0]]], form => [grant_type => 'client_credentials', scope => 'orders:read'] });
is($res->{status}, 200, 'oidc-provider issues a token for a DPoP token request') or diag($res->{body});
is($res->{json}{token_type}, 'DPoP', 'the token is DPoP-bound (token_type DPoP)');
my $bound = $res->{json}{access_token};
my $bearer = $op->token;

my $gw = $op->{client_for}{client_secret_basic};
my $secret = $op->{clients}{$gw}{client_secret};
my $port = server_port();
my $config = <<CONF;
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id $gw;
    auth_oauth2_token_client_secret "$secret";
    proxy_set_header X-Jkt \$oauth2_token_dpop_jkt;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass $op->{introspection_endpoint};
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $op->{ca};
    proxy_ssl_name localhost;
    subrequest_output_buffer_size 64k;
}
CONF
start_nginx(block_from(name => 'oidc dpop', config => $config)) or BAIL_OUT('nginx');

sub get {
    my ($scheme, $token, @dpop) = @_;
    my $r = http_request(raw_request('GET', '/api/orders', ["Host: localhost:$port",
        "Authorization: $scheme $token", map { "DPoP: $_" } @dpop]));
    my @c = map { $_->[1] } grep { lc $_->[0] eq 'www-authenticate' } @{ $r->{headers} };
    return ($r->{status}, join ' | ', @c);
}

my $htu = "http://localhost:$port/api/orders";
my $fresh = proofs({ htm => 'GET', htu => $htu, token => $bound });
my ($status, $challenge) = get('DPoP', $bound, $fresh->{proofs}[0]);
is($status, 200, 'the DPoP-bound token with a fresh proof by its key passes');
my $last = backend_requests()->[-1];
my ($jkt) = map { $_->[1] } grep { lc $_->[0] eq 'x-jkt' } @{ $last->{headers} // [] };
is($jkt, $p->{jkt}, 'the proof key is the one the IdP bound the token to');

($status, $challenge) = get('Bearer', $bound);
is($status, 401, 'the same token replayed as Bearer (stolen) is refused');
like($challenge, qr/DPoP realm="api", algs="[^"]+", error="invalid_token"/, 'with the DPoP challenge');

($status, $challenge) = get('DPoP', $bound);
is($status, 401, 'with the DPoP scheme but no proof: refused');
like($challenge, qr/error="invalid_dpop_proof"/, 'invalid_dpop_proof');

($status) = get('DPoP', $bound, $fresh->{proofs}[0]);
is($status, 401, 'the first proof again: a replay, refused');

($status) = get('Bearer', $bearer);
is($status, 200, 'a bearer token of the same IdP passes as before');

done_testing();
