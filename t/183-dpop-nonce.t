# Server-provided DPoP nonces (RFC 9449 §9, auth_oauth2_token_dpop_nonce_key_file):
# a proof without the gateway's nonce gets 401 use_dpop_nonce and a
# DPoP-Nonce header; a proof (npm `dpop`) with that nonce passes; a forged
# nonce is refused; two gateways with the same key file accept each other's
# nonces (stateless), a gateway with another key does not.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use File::Temp qw(tempdir);
use JSON::PP;

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;
start_servers();

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';
sub spew_file { my ($f, $d, $mode) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $d; close $fh; chmod $mode // 0600, $f }
spew_file("$dir/nonce.key", "a nonce key of more than thirty-two bytes, shared by the fleet\n");
spew_file("$dir/other.key", "another nonce key of more than thirty-two bytes, of another fleet\n");

sub proofs {
    my (@specs) = @_;
    open my $fh, '>', "$dir/in.json" or die $!;
    print $fh encode_json({ keyfile => "$dir/client.jwk", proofs => \@specs });
    close $fh;
    my $out = `$NODE t/oidc/dpop.mjs < $dir/in.json`;
    die "t/oidc/dpop.mjs failed: $?" if $?;
    return decode_json($out);
}

my $TOKEN = 'nonce-bound-token';
my $jkt = proofs()->{jkt};
my $port = server_port();
my $URL = "http://localhost:$port";
sub config {
    my ($key) = @_;
    return <<CONF;
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_client_secret s3cret;
auth_oauth2_token_dpop_nonce_key_file $dir/$key;
location /api/ { proxy_pass http://backend; }
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF
}

idp_setup({ $TOKEN => { json => { active => \1, sub => 'alice', cnf => { jkt => $jkt } } } });
start_nginx(block_from(name => 'nonce', config => config('nonce.key'))) or BAIL_OUT('nginx');

sub send_req {
    my (@dpop) = @_;
    my $r = http_request(raw_request('GET', '/api/x', ["Host: localhost:$port", "Authorization: DPoP $TOKEN", map { "DPoP: $_" } @dpop]));
    my %h;
    push @{ $h{ lc $_->[0] } }, $_->[1] for @{ $r->{headers} };
    return ($r->{status}, join(' | ', @{ $h{'www-authenticate'} // [] }), $h{'dpop-nonce'}[0]);
}

my ($status, $challenge, $nonce) = send_req(proofs({ htm => 'GET', htu => "$URL/api/x", token => $TOKEN })->{proofs}[0]);
is($status, 401, 'a proof without a nonce: 401');
like($challenge, qr/DPoP realm="api", algs="[^"]+", error="use_dpop_nonce"/, 'use_dpop_nonce in the DPoP challenge');
like($nonce // '', qr/^[A-Za-z0-9_-]{32}$/, 'a DPoP-Nonce header with the nonce');

($status) = send_req(proofs({ htm => 'GET', htu => "$URL/api/x", token => $TOKEN, nonce => $nonce })->{proofs}[0]);
is($status, 200, 'a proof with the server\'s nonce (made by the dpop package) passes');

my $forged = $nonce;
substr($forged, 20, 1) = substr($forged, 20, 1) eq 'A' ? 'B' : 'A';
($status, $challenge) = send_req(proofs({ htm => 'GET', htu => "$URL/api/x", token => $TOKEN, nonce => $forged })->{proofs}[0]);
is($status, 401, 'a forged nonce: 401');
like($challenge, qr/error="use_dpop_nonce"/, 'a forged nonce: use_dpop_nonce');

# Another gateway (a reload with the same key file stands in for it)
# accepts the nonce; one with another key does not.
ok(reload_nginx(block_from(name => 'same key', config => config('nonce.key'))), 'reloaded with the same key file');
($status) = send_req(proofs({ htm => 'GET', htu => "$URL/api/x", token => $TOKEN, nonce => $nonce })->{proofs}[0]);
is($status, 200, 'a gateway with the same key file accepts the nonce (stateless)');
ok(reload_nginx(block_from(name => 'other key', config => config('other.key'))), 'reloaded with another key file');
($status, $challenge, my $other) = send_req(proofs({ htm => 'GET', htu => "$URL/api/x", token => $TOKEN, nonce => $nonce })->{proofs}[0]);
is($status, 401, 'a gateway with another key refuses it');
isnt($other, $nonce, 'and hands out its own nonce');

my $m = join "\n", grep { /auth_oauth2_token/ } split /\n/, error_log_text();
unlike($m, qr/\Q$nonce\E/, 'nonces are not logged by the module');

done_testing();
