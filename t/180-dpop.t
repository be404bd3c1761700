# DPoP-bound tokens (RFC 9449) checked at the gateway: the test IdP's
# introspection answers carry cnf.jkt; proofs are made by the npm `dpop`
# package (and, for those a client must not send, by `jose`) in
# t/oidc/dpop.mjs. A bound token passes only with the DPoP scheme and a
# fresh proof by its key for this method and URI; the proof is checked again
# on cache hits and after internal redirects; the DPoP header never reaches
# the upstream. Every refusal:
# status, error and the challenges (Bearer and DPoP).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use File::Temp qw(tempdir);
use JSON::PP;
use Digest::SHA qw(sha256);
use MIME::Base64 qw(encode_base64url);

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();

my $dir = tempdir(CLEANUP => 1);
my $JSON = JSON::PP->new->canonical;
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';

# Proofs by the key in $keyfile (made on first use), one per spec.
sub proofs {
    my ($keyfile, @specs) = @_;
    my $in = "$dir/in.json";
    open my $fh, '>', $in or die $!;
    print $fh $JSON->encode({ keyfile => "$dir/$keyfile", proofs => \@specs });
    close $fh;
    my $out = `$NODE t/oidc/dpop.mjs < $in`;
    die "t/oidc/dpop.mjs failed: $?" if $?;
    return decode_json($out);
}

my $port = server_port();
my $URL = "http://localhost:$port";
my ($TOKEN, $UNBOUND) = ('dpop-bound-token-1', 'bearer-token-1');
my $alice = proofs('alice.jwk');    # the key the token is bound to
my $JKT = $alice->{jkt};
proofs('mallory.jwk');

my $config = <<CONF;
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_client_secret s3cret;
add_header X-Error \$oauth2_token_error always;
add_header X-Jkt \$oauth2_token_dpop_jkt always;
location /api/ {
    proxy_set_header X-Jkt \$oauth2_token_dpop_jkt;
    proxy_pass http://backend;
}
location /cached/ {
    auth_oauth2_token_introspect_cache zone=intro:1m max_ttl=60s;
    proxy_pass http://backend;
}
location /strict/ {
    auth_oauth2_token_dpop_require on;
    auth_oauth2_token_dpop_algorithms ES256;
    proxy_pass http://backend;
}
location /redirect/ {
    try_files /nonexistent \@app;
}
location \@app {
    proxy_set_header X-Jkt \$oauth2_token_dpop_jkt;
    proxy_pass http://backend;
}
location /ph/ {
    auth_oauth2_token_phantom on;
    try_files /nonexistent \@ph;
}
location \@ph {
    auth_oauth2_token_phantom on;
    proxy_pass http://backend;
}
location /behind/ {
    auth_oauth2_token_dpop_origin https://api.example.com;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_introspect off; auth_oauth2_token_metrics; }
CONF

my $PHANTOM = join '.', map { encode_base64url($_) } '{"alg":"ES256","typ":"JWT"}', '{"sub":"alice"}', 'signature';
idp_setup({
    $TOKEN   => { json => { active => \1, sub => 'alice', cnf => { jkt => $JKT }, jwt => $PHANTOM } },
    $UNBOUND => { json => { active => \1, sub => 'bob' } },
});
start_nginx(block_from(name => 'dpop', config => $config, workers => 2)) or BAIL_OUT('nginx');

sub send_req {
    my (%o) = @_;
    my @headers = ("Host: localhost:$port", @{ $o{headers} // [] });
    push @headers, "Authorization: $o{scheme} $o{token}" if $o{token};
    push @headers, "DPoP: $_" for @{ $o{dpop} // [] };
    my $r = http_request(raw_request($o{method} // 'GET', $o{uri}, \@headers, $o{body}));
    my %h;
    push @{ $h{ lc $_->[0] } }, $_->[1] for @{ $r->{headers} };
    $r->{all} = \%h;
    return $r;
}

sub challenges { join ' | ', @{ $_[0]{all}{'www-authenticate'} // [] } }

sub backend_header {
    my ($name) = @_;
    my $last = backend_requests()->[-1] or return undef;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $last->{headers} };
    return @v ? join(',', @v) : undef;
}

my $ALGS = 'RS256 PS256 ES256 EdDSA';

# 1. A bound token with its proof passes; the proof's key is in the
# variable; the DPoP header does not reach the upstream.
{
    my $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/api/orders", token => $TOKEN });
    my $r = send_req(uri => '/api/orders?page=2', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 200, 'a DPoP-bound token with a valid proof passes (query ignored)');
    is(backend_header('X-Jkt'), $JKT, '$oauth2_token_dpop_jkt is the proof key\'s thumbprint');
    is(backend_header('DPoP'), undef, 'the DPoP header is not forwarded upstream');
    is(backend_header('Authorization'), "DPoP $TOKEN", 'the Authorization header goes on as sent');

    # The same proof again: a replay (to whichever worker takes it).
    $r = send_req(uri => '/api/orders', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 401, 'a replayed proof is refused');
    like(challenges($r), qr/DPoP realm="[^"]*", algs="$ALGS", error="invalid_dpop_proof", error_description="the DPoP proof was used before"/,
        'replay: invalid_dpop_proof in the DPoP challenge');
    is($r->{all}{'x-error'}[0], 'invalid_dpop_proof', 'replay: $oauth2_token_error');
    my $replays = 0;
    for (1 .. 4) {
        $replays++ if send_req(uri => '/api/orders', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs})->{status} == 401;
    }
    is($replays, 4, 'the replay is refused by every worker (one store in shared memory)');
}

# 2. Bearer tokens still pass as before; a refusal that does not concern
# DPoP keeps the one Bearer challenge.
{
    my $r = send_req(uri => '/api/x', scheme => 'Bearer', token => $UNBOUND);
    is($r->{status}, 200, 'an unbound token passes as Bearer');
    $r = send_req(uri => '/api/x');
    is($r->{status}, 401, 'no token: 401');
    is(challenges($r), 'Bearer realm="api"', 'no token: the Bearer challenge, no error');
    $r = send_req(uri => '/api/x', scheme => 'DPoP', token => 'unknown-token');
    is($r->{status}, 401, 'an inactive token sent with the DPoP scheme: 401');
    is(challenges($r), qq{Bearer realm="api" | DPoP realm="api", algs="$ALGS", error="invalid_token"},
        'the DPoP client hears the error in the DPoP challenge');
}

# 3. Every refusal of a bound token.
my $now = time;
my @specs = (
    ['no proof', undef, qr/error="invalid_dpop_proof", error_description="a DPoP proof is required"/],
    ['a proof by another key', ['mallory.jwk', {}], qr/error="invalid_dpop_proof", error_description="the DPoP proof's key is not the token's"/],
    ['wrong htm', ['alice.jwk', { htm => 'POST' }], qr/error_description="the DPoP proof is for another method"/],
    ['wrong htu (other path)', ['alice.jwk', { htu => "$URL/api/other" }], qr/error_description="the DPoP proof is for another URI"/],
    ['wrong htu (other host)', ['alice.jwk', { htu => "http://evil.example:$port/api/orders" }], qr/error_description="the DPoP proof is for another URI"/],
    ['wrong htu (https)', ['alice.jwk', { htu => "https://localhost:$port/api/orders" }], qr/error_description="the DPoP proof is for another URI"/],
    ['iat too old', ['alice.jwk', { iat => $now - 120 }], qr/error_description="the DPoP proof is too old"/],
    ['iat in the future', ['alice.jwk', { iat => $now + 60 }], qr/error_description="the DPoP proof is issued in the future"/],
    ['wrong ath', ['alice.jwk', { ath => encode_base64url(sha256('another token')) }], qr/error_description="the DPoP proof is for another access token"/],
    ['no ath', ['alice.jwk', { drop => ['ath'] }], qr/error_description="the DPoP proof lacks a required claim"/],
    ['a jwk with a private member', ['alice.jwk', { private => \1 }], qr/error_description="the DPoP proof's jwk holds a private key"/],
    ['alg none', ['alice.jwk', { alg => 'none' }], qr/error_description="unsecured proofs \(alg none\) are not accepted"/],
    ['HS256', ['alice.jwk', { alg => 'HS256' }], qr/error_description="the DPoP proof's algorithm is not accepted"/],
    ['typ JWT', ['alice.jwk', { typ => 'JWT' }], qr/error_description="the DPoP proof's typ is not dpop\+jwt"/],
);
for my $case (@specs) {
    my ($name, $how, $expected) = @$case;
    my @dpop;
    if ($how) {
        my ($keyfile, $over) = @$how;
        my %spec = (htm => 'GET', htu => "$URL/api/orders", token => $TOKEN, %$over);
        # A custom proof (jose) where the spec changes anything but the key.
        $spec{jti} = 'j-' . rand() if !%$over;
        @dpop = @{ proofs($keyfile, \%spec)->{proofs} };
    }
    my $r = send_req(uri => '/api/orders', scheme => 'DPoP', token => $TOKEN, dpop => \@dpop);
    is($r->{status}, 401, "$name: 401");
    like(challenges($r), qr/^Bearer realm="api" \| DPoP realm="api", algs="$ALGS", .*$expected/, "$name: the DPoP challenge says why");
}
{
    my $p = proofs('alice.jwk', map { { htm => 'GET', htu => "$URL/api/orders", token => $TOKEN } } 1 .. 2);
    my $r = send_req(uri => '/api/orders', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 401, 'two DPoP headers: 401');
    like(challenges($r), qr/error_description="more than one DPoP header"/, 'two DPoP headers: said');

    $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/api/orders", token => $TOKEN });
    $r = send_req(uri => '/api/orders', scheme => 'Bearer', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 401, 'a bound token sent as Bearer is refused, even with a valid proof');
    like(challenges($r), qr/^Bearer realm="api" \| DPoP realm="api", algs="$ALGS", error="invalid_token", error_description="the token is bound to a DPoP key: send it with the DPoP scheme and a proof"$/,
        'bound token as Bearer: invalid_token in the DPoP challenge');

    $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/api/orders", token => $UNBOUND });
    $r = send_req(uri => '/api/orders', scheme => 'DPoP', token => $UNBOUND, dpop => $p->{proofs});
    is($r->{status}, 401, 'an unbound token sent with the DPoP scheme is refused');
    like(challenges($r), qr/error="invalid_token", error_description="the token is not bound to a DPoP key"/, 'unbound DPoP token: said');
}

# 4. Cache hits are checked again: the verdict comes from the zone, the
# proof from each request.
{
    my $calls = scalar @{ idp_requests() };
    for my $i (1 .. 3) {
        my $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/cached/x", token => $TOKEN });
        is(send_req(uri => '/cached/x', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs})->{status}, 200, "cached verdict, fresh proof $i: 200");
    }
    my $r = send_req(uri => '/cached/x', scheme => 'DPoP', token => $TOKEN);
    is($r->{status}, 401, 'cached verdict, no proof: 401');
    $r = send_req(uri => '/cached/x', scheme => 'Bearer', token => $TOKEN);
    is($r->{status}, 401, 'cached verdict, sent as Bearer: 401');
    is(scalar @{ idp_requests() } - $calls, 1, 'one IdP call: the others were cache hits');
}

# 5. A location that requires DPoP: unbound tokens are refused, the
# challenge announces DPoP alone with its algorithms.
{
    my $r = send_req(uri => '/strict/x', scheme => 'Bearer', token => $UNBOUND);
    is($r->{status}, 401, 'dpop_require: an unbound token is refused');
    is(challenges($r), 'DPoP realm="api", algs="ES256", error="invalid_token", error_description="this resource accepts DPoP-bound tokens only"',
        'dpop_require: only the DPoP challenge');
    my $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/strict/x", token => $TOKEN });
    is(send_req(uri => '/strict/x', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs})->{status}, 200, 'dpop_require: a bound token with its proof passes');
}

# 5a. An internal redirect checks the token again with the same proof,
# which is not taken for its own replay; the DPoP header stays withheld.
{
    my $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/redirect/x", token => $TOKEN });
    my $r = send_req(uri => '/redirect/x', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 200, 'internal redirect: the proof holds in the named location too');
    is(backend_header('X-Jkt'), $JKT, 'internal redirect: the variable is set by the second check');
    is(backend_header('DPoP'), undef, 'internal redirect: the DPoP header is still withheld');
    $r = send_req(uri => '/redirect/x', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 401, 'internal redirect: the same proof in a new request is a replay');
}

# 5c. Phantom tokens: the answer's cnf binds the client's token; after the
# internal redirect the Authorization header holds the phantom JWT, and the
# scheme the client used (recorded on the first pass) still counts.
{
    my $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/ph/x", token => $TOKEN });
    my $r = send_req(uri => '/ph/x', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 200, 'phantom + internal redirect: the bound token with its proof passes');
    is(backend_header('Authorization'), "Bearer $PHANTOM", 'phantom: the upstream gets the JWT');
    $r = send_req(uri => '/ph/x', scheme => 'Bearer', token => $TOKEN);
    is($r->{status}, 401, 'phantom: the bound token as Bearer is refused');
}

# 5b. Behind a TLS terminator: proofs name the configured origin.
{
    my $p = proofs('alice.jwk', { htm => 'GET', htu => 'https://api.example.com/behind/x?y=1', token => $TOKEN });
    is(send_req(uri => '/behind/x', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs})->{status}, 200,
        'dpop_origin: a proof for the public https URL passes');
    $p = proofs('alice.jwk', { htm => 'GET', htu => "$URL/behind/x", token => $TOKEN });
    my $r = send_req(uri => '/behind/x', scheme => 'DPoP', token => $TOKEN, dpop => $p->{proofs});
    is($r->{status}, 401, 'dpop_origin: a proof for the gateway\'s own URL does not');
}

# 6. The metrics count proofs by result and the other refusals by reason.
{
    my $m = http_request(raw_request('GET', '/metrics', []))->{body};
    for (['valid', 10], ['replayed', 6], ['key_mismatch', 1], ['htm_htu_mismatch', 5], ['stale', 2],
        ['ath_mismatch', 1], ['bad_key', 2], ['missing', 2], ['malformed', 4]) {
        like($m, qr/^oauth2_token_dpop_proofs_total\{result="$_->[0]"\} $_->[1]$/m, "metrics: $_->[1] $_->[0] proofs");
    }
    for (['bearer_scheme', 3], ['not_dpop_bound', 1], ['dpop_required', 1]) {
        like($m, qr/^oauth2_token_bindings_refused_total\{reason="$_->[0]"\} $_->[1]$/m, "metrics: $_->[1] refused for $_->[0]");
    }
}

# nginx's own debug lines print request headers; the module's never carry
# a token or a proof.
my $log = join "\n", grep { /auth_oauth2_token/ } split /\n/, error_log_text();
unlike($log, qr/\Q$TOKEN\E/, 'the token is never in the module\'s log lines');
unlike($log, qr/eyJ[A-Za-z0-9_-]{20,}/, 'no proof is in the module\'s log lines');
like($log, qr/auth_oauth2_token: DPoP proof refused: htm is not the request's method/, 'the reason is logged');

done_testing();
