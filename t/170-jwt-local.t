# JWT access tokens checked at the gateway (auth_oauth2_token_jwt, RFC
# 9068) with keys from a local JWK Set file: tokens signed here with openssl
# (RS256, PS256, ES256, EdDSA) pass with their claims in the variables and
# the policy, cached in the zone; every refusal is a 401 invalid_token whose
# error_description names the failed check, with no IdP call (expired, not
# yet valid, wrong aud, iss, typ, alg none, HS256 "signed" with the RSA
# public key, a flipped signature bit, an unknown kid, a claim that would
# split a header); with introspection on too, a verified JWT and an opaque
# token go to the IdP and a forged JWT never does; and the configuration
# mistakes nginx -t names.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64url decode_base64url);
use Digest::SHA qw(hmac_sha256);
use JSON::PP;
use Cwd ();

start_servers();

my $keys = tempdir(CLEANUP => 1);
chmod 0755, $keys;
sub openssl { system('openssl', @_) == 0 or die "openssl @_ failed" }
sub slurp_file { my ($f) = @_; open my $fh, '<:raw', $f or die "$f: $!"; local $/; <$fh> }
sub spew_file { my ($f, $d) = @_; open my $fh, '>:raw', $f or die "$f: $!"; print $fh $d; close $fh }

openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', "$keys/rsa.pem", '-quiet');
openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$keys/ec.pem");
openssl('genpkey', '-algorithm', 'ED25519', '-out', "$keys/ed.pem");
openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$keys/other.pem");
openssl('genpkey', '-algorithm', 'ED25519', '-out', "$keys/b.pem");
openssl('pkey', '-in', "$keys/b.pem", '-pubout', '-outform', 'DER', '-out', "$keys/b.der");
for my $k (qw(rsa ec ed)) {
    openssl('pkey', '-in', "$keys/$k.pem", '-pubout', '-out', "$keys/$k.pub");
    openssl('pkey', '-in', "$keys/$k.pem", '-pubout', '-outform', 'DER', '-out', "$keys/$k.der");
}

# The public JWK Set, from the keys' DER (SubjectPublicKeyInfo ends with the
# EC point 04||x||y, or the 32 bytes of an Ed25519 key).
my ($modulus) = `openssl rsa -pubin -in $keys/rsa.pub -modulus -noout` =~ /Modulus=([0-9A-F]+)/;
my $ec_point = substr(slurp_file("$keys/ec.der"), -65);
my $jwks = {
    keys => [
        { kty => 'RSA', kid => 'rsa-1', use => 'sig', n => encode_base64url(pack('H*', $modulus)), e => 'AQAB' },
        { kty => 'EC', kid => 'ec-1', crv => 'P-256', alg => 'ES256',
          x => encode_base64url(substr($ec_point, 1, 32)), y => encode_base64url(substr($ec_point, 33, 32)) },
        { kty => 'OKP', kid => 'ed-1', crv => 'Ed25519', x => encode_base64url(substr(slurp_file("$keys/ed.der"), -32)) },
        { kty => 'EC', kid => 'enc-1', use => 'enc', crv => 'P-521', x => 'AA', y => 'AA' },
    ],
};
spew_file("$keys/jwks.json", encode_json($jwks));
# A second issuer's own key set.
spew_file("$keys/b.json", encode_json({ keys => [
    { kty => 'OKP', kid => 'b-1', crv => 'Ed25519', x => encode_base64url(substr(slurp_file("$keys/b.der"), -32)) } ] }));
my $with_private = { keys => [ { %{ $jwks->{keys}[0] }, d => 'AQAB' } ] };
spew_file("$keys/private.json", encode_json($with_private));

# A DER ECDSA signature as JWS wants it: r and s, 32 bytes each.
sub der_to_raw {
    my ($der) = @_;
    my ($rlen) = unpack('x3 C', $der);
    my $r = substr($der, 4, $rlen);
    my $slen = unpack('C', substr($der, 5 + $rlen, 1));
    my $s = substr($der, 6 + $rlen, $slen);
    return join '', map { my $x = $_; $x =~ s/^\x00+//; ("\x00" x (32 - length $x)) . $x } $r, $s;
}

sub sign {
    my ($alg, $key, $input) = @_;
    return hmac_sha256($input, $key) if $alg eq 'HS256';
    spew_file("$keys/in", $input);
    if ($alg eq 'EdDSA') {
        openssl('pkeyutl', '-sign', '-inkey', $key, '-rawin', '-in', "$keys/in", '-out', "$keys/sig");
    } else {
        my @pss = $alg eq 'PS256' ? ('-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:digest') : ();
        openssl('dgst', '-sha256', '-sign', $key, @pss, '-out', "$keys/sig", "$keys/in");
    }
    my $sig = slurp_file("$keys/sig");
    return $alg eq 'ES256' ? der_to_raw($sig) : $sig;
}

my $NOW = time;
my $ISS = 'https://idp.test';
sub claims {
    my (%over) = @_;
    my %c = (iss => $ISS, aud => ['api'], sub => 'alice', scope => 'read write', client_id => 'app',
        iat => $NOW, exp => $NOW + 300, jti => 'j-' . rand());
    @c{ keys %over } = values %over;
    delete $c{$_} for grep { !defined $c{$_} } keys %c;
    return \%c;
}

my $JSON = JSON::PP->new->canonical;
sub token {
    my (%o) = @_;
    my $alg = $o{alg} // 'RS256';
    my %header = (alg => $alg, typ => $o{typ} // 'at+jwt');
    $header{kid} = $o{kid} if defined $o{kid};
    delete $header{typ} if exists $o{typ} && !defined $o{typ};
    my $input = encode_base64url($JSON->encode(\%header)) . '.' . encode_base64url($JSON->encode($o{claims} // claims()));
    my $key = $o{key} // { RS256 => "$keys/rsa.pem", PS256 => "$keys/rsa.pem", ES256 => "$keys/ec.pem",
        EdDSA => "$keys/ed.pem" }->{$alg};
    return "$input." . ($alg eq 'none' ? '' : encode_base64url(sign($alg, $key, $input)));
}

my $config = <<CONF;
auth_oauth2_token_jwt on;
auth_oauth2_token_jwt_issuer $ISS;
auth_oauth2_token_jwt_keys_file $keys/jwks.json;
auth_oauth2_token_require_audience api;
add_header X-Error \$oauth2_token_error always;
add_header X-Cache \$oauth2_token_cache_status always;
location / {
    proxy_set_header X-Sub \$oauth2_token_sub;
    proxy_set_header X-Scope \$oauth2_token_scope;
    proxy_set_header X-Tier \$jwt_tier;
    proxy_pass http://backend;
}
location /cached/ {
    auth_oauth2_token_jwt_cache zone=jwt:1m max_ttl=60s;
    auth_oauth2_token_jwt_leeway 0s;
    proxy_set_header X-Sub \$oauth2_token_sub;
    proxy_pass http://backend;
}
location /write/ {
    auth_oauth2_token_require_scope admin;
    proxy_pass http://backend;
}
location /gold/ {
    auth_oauth2_token_require_claim tier string gold;
    proxy_pass http://backend;
}
location /multi/ {
    auth_oauth2_token_jwt_issuer $ISS;
    auth_oauth2_token_jwt_issuer https://b.test keys=$keys/b.json algorithms=EdDSA;
    proxy_set_header X-Sub \$oauth2_token_sub;
    proxy_pass http://backend;
}
location /both/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_jwt off; auth_oauth2_token_metrics; }
CONF
my $http = 'auth_oauth2_token_claim_set $jwt_tier tier;';

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, defined $token ? ["Authorization: Bearer $token"] : []));
    my %h;
    push @{ $h{ lc $_->[0] } }, $_->[1] for @{ $r->{headers} };
    $r->{h} = { map { $_ => $h{$_}[0] } keys %h };
    return $r;
}

sub backend_header {
    my ($name) = @_;
    my $last = backend_requests()->[-1] or return undef;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $last->{headers} };
    return $v[0];
}

my $rsa_ok = token(kid => 'rsa-1', claims => claims(tier => 'gold'));
idp_setup({ $rsa_ok => { json => { active => \1, sub => 'alice', aud => 'api' } } });
start_nginx(block_from(name => 'jwt', config => $config, http_config => $http)) or BAIL_OUT('nginx');

# 1. Tokens of every algorithm pass, their claims in the variables.
for my $case (
    ['RS256', token(kid => 'rsa-1', claims => claims(tier => 'gold'))],
    ['PS256', token(alg => 'PS256', kid => 'rsa-1')],
    ['ES256', token(alg => 'ES256', kid => 'ec-1', typ => 'application/at+jwt')],
    ['EdDSA', token(alg => 'EdDSA', kid => 'ed-1')],
    ['EdDSA without kid', token(alg => 'EdDSA')],
) {
    my ($name, $t) = @$case;
    my $r = get('/api', $t);
    is($r->{status}, 200, "$name: passes");
    is(backend_header('X-Sub'), 'alice', "$name: \$oauth2_token_sub is the token's sub");
    is(backend_header('X-Scope'), 'read write', "$name: \$oauth2_token_scope");
}
get('/api', $rsa_ok);
is(backend_header('X-Tier'), 'gold', 'claim_set reads a claim of the verified JWT');
is(backend_header('Authorization'), "Bearer $rsa_ok", 'the upstream gets the client\'s token as it is');

# 2. Every failed check: 401 invalid_token, its description, no IdP call.
my $other_rsa_hmac = slurp_file("$keys/rsa.pub");
my $flipped = $rsa_ok;
substr($flipped, -5, 1) = substr($flipped, -5, 1) eq 'A' ? 'B' : 'A';
my $crlf = token(kid => 'rsa-1', claims => claims(sub => "alice\r\nX-Admin: yes"));
for my $case (
    ['expired', token(kid => 'rsa-1', claims => claims(exp => $NOW - 120)), 'the token has expired'],
    ['not yet valid', token(kid => 'rsa-1', claims => claims(nbf => $NOW + 600)), 'the token is not valid yet'],
    ['issued in the future', token(kid => 'rsa-1', claims => claims(iat => $NOW + 600)), 'the token was issued in the future'],
    ['no exp', token(kid => 'rsa-1', claims => claims(exp => undef)), 'the token has no expiry'],
    ['wrong aud', token(kid => 'rsa-1', claims => claims(aud => 'web')), 'the token is not meant for this resource'],
    ['no aud', token(kid => 'rsa-1', claims => claims(aud => undef)), 'the token has no audience'],
    ['wrong iss', token(kid => 'rsa-1', claims => claims(iss => 'https://evil.test')), 'the token\'s issuer is not accepted'],
    ['typ JWT', token(kid => 'rsa-1', typ => 'JWT'), 'the token is not typed at+jwt'],
    ['no typ', token(kid => 'rsa-1', typ => undef), 'the token is not typed at+jwt'],
    ['alg none', token(alg => 'none'), 'unsecured tokens (alg none) are not accepted'],
    ['HS256 with the RSA public key as secret', token(alg => 'HS256', kid => 'rsa-1', key => $other_rsa_hmac),
        'the token\'s algorithm is not accepted'],
    ['a flipped signature bit', $flipped, 'the token\'s signature is invalid'],
    ['an unknown kid', token(alg => 'ES256', kid => 'ec-2', key => "$keys/other.pem"), 'no key is known for the token'],
    ['a key the set does not hold, no kid', token(alg => 'ES256', key => "$keys/other.pem"), 'the token\'s signature is invalid'],
    ['an ES256 token naming the RSA key', token(alg => 'ES256', kid => 'rsa-1'), 'no key is known for the token'],
    ['an opaque token', 'opaque-token-123', 'the token is not a compact JWS'],
    ['a claim that would split a header', $crlf, 'the token has a claim that cannot be passed on'],
) {
    my ($name, $t, $description) = @$case;
    my $r = get('/api', $t);
    is($r->{status}, 401, "$name: 401");
    is($r->{h}{'www-authenticate'}, qq{Bearer realm="api", error="invalid_token", error_description="$description"},
        "$name: the challenge names the check");
    is($r->{h}{'x-error'}, 'invalid_token', "$name: \$oauth2_token_error");
}
is(scalar @{ idp_requests() }, 0, 'no refused JWT reached the IdP');
# nginx's own debug lines print request headers; the module's lines never
# carry a token or a claim's value.
my $log = join "\n", grep { /auth_oauth2_token/ } split /\n/, error_log_text();
unlike($log, qr/\Q$rsa_ok\E|\Q$flipped\E|alice\r|X-Admin/, 'no token or claim value in the module\'s log lines');
like($log, qr/auth_oauth2_token: JWT refused: signature does not verify/, 'the reason is logged');

my $metrics = get('/metrics')->{body};
for (['verified', 6], ['lifetime', 4], ['claims', 6], ['malformed', 3], ['signature', 2], ['no_key', 2]) {
    like($metrics, qr/^oauth2_token_jwt_checks_total\{result="$_->[0]"\} $_->[1]$/m, "metrics: $_->[1] $_->[0]");
}

# 3. The location's policy applies to a verified JWT.
is(get('/write/x', $rsa_ok)->{status}, 403, 'a required scope the JWT lacks: 403');
is(get('/gold/x', $rsa_ok)->{status}, 200, 'a require_claim the JWT meets: 200');
is(get('/gold/x', token(alg => 'EdDSA', kid => 'ed-1'))->{status}, 403, 'a require_claim the JWT does not meet: 403');

# 3b. Two issuers on one location: each token is checked with the keys of
# the issuer it names, never another's.
my %b = (alg => 'EdDSA', key => "$keys/b.pem");
for my $case (
    ['issuer A\'s token', token(kid => 'rsa-1'), 200, undef],
    ['issuer B\'s token', token(%b, kid => 'b-1', claims => claims(iss => 'https://b.test', sub => 'bob')), 200, undef],
    ['B\'s key claiming to be A', token(%b, kid => 'b-1'), 401, 'no key is known for the token'],
    ['A\'s key claiming to be B', token(alg => 'EdDSA', claims => claims(iss => 'https://b.test')), 401,
        'the token\'s signature is invalid'],
    ['B with an algorithm B does not use', token(alg => 'ES256', kid => 'ec-1', claims => claims(iss => 'https://b.test')), 401,
        'the token\'s algorithm is not accepted'],
    ['an issuer the location does not name', token(kid => 'rsa-1', claims => claims(iss => 'https://c.test')), 401,
        'the token\'s issuer is not accepted'],
) {
    my ($name, $t, $status, $description) = @$case;
    my $r = get('/multi/x', $t);
    is($r->{status}, $status, "two issuers: $name: $status");
    like($r->{h}{'www-authenticate'}, qr/error_description="\Q$description\E"/, "two issuers: $name: why")
        if $description;
}
get('/multi/x', token(%b, kid => 'b-1', claims => claims(iss => 'https://b.test', sub => 'bob')));
is(backend_header('X-Sub'), 'bob', 'two issuers: the claims are the token\'s');

# 4. The cache: the second request is a hit; refused tokens are never stored.
my $cached = token(alg => 'ES256', kid => 'ec-1');
my @r = map { get('/cached/x', $cached) } 1 .. 2;
is_deeply([map { $_->{status} } @r], [200, 200], 'cached location: both pass');
is_deeply([map { $_->{h}{'x-cache'} } @r], ['MISS', 'HIT'], 'the second is a cache hit');
is(backend_header('X-Sub'), 'alice', 'a hit keeps the claims');
my @bad = map { get('/cached/x', $flipped) } 1 .. 2;
is_deeply([map { $_->{status} } @bad], [401, 401], 'a forged token is refused every time');
is_deeply([map { $_->{h}{'x-cache'} } @bad], ['MISS', 'MISS'], 'and never cached');
my $short = token(alg => 'EdDSA', kid => 'ed-1', claims => claims(exp => time + 2));
is(get('/cached/x', $short)->{status}, 200, 'a token about to expire passes');
sleep 3;
my $late = get('/cached/x', $short);
is($late->{status}, 401, 'a cached verdict is never served past the token\'s exp');

# 5. With introspection too: a verified JWT and an opaque token go to the
# IdP; a forged one never does.
idp_setup({ $rsa_ok => { json => { active => \1, sub => 'alice', aud => 'api' } },
    'opaque-1' => { json => { active => \1, sub => 'bob', aud => 'api' } },
    $cached => { json => { active => \0 } } });
is(get('/both/x', $rsa_ok)->{status}, 200, 'combined: a verified JWT the IdP calls active passes');
is(get('/both/x', 'opaque-1')->{status}, 200, 'combined: an opaque token goes to introspection');
is(get('/both/x', $cached)->{status}, 401, 'combined: a verified JWT the IdP revoked is refused');
is(scalar @{ idp_requests() }, 3, 'combined: three IdP calls so far');
my $forged = get('/both/x', $flipped);
is($forged->{status}, 401, 'combined: a forged JWT is refused');
like($forged->{h}{'www-authenticate'}, qr/error_description="the token's signature is invalid"/, 'combined: with its reason');
is(scalar @{ idp_requests() }, 3, 'combined: the forged JWT never reached the IdP');
stop_nginx();

# 6. Configuration mistakes fail nginx -t naming the directive.
my $nginx = $ENV{TEST_NGINX_BINARY} || 'objs/nginx';
my $module = Cwd::abs_path($ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so');
spew_file("$keys/empty.json", '{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}');
spew_file("$keys/secret", "short\n");
for my $case (
    ["auth_oauth2_token_jwt on; auth_oauth2_token_jwt_issuer $ISS; auth_oauth2_token_jwt_keys_file $keys/jwks.json;",
        qr/"auth_oauth2_token_jwt" needs "auth_oauth2_token_require_audience"/],
    ["auth_oauth2_token_jwt on; auth_oauth2_token_jwt_issuer $ISS; auth_oauth2_token_require_audience api;",
        qr/"auth_oauth2_token_jwt" needs "auth_oauth2_token_jwt_keys_file"/],
    ["auth_oauth2_token_jwt on; auth_oauth2_token_jwt_keys_file $keys/jwks.json; auth_oauth2_token_require_audience api;",
        qr/"auth_oauth2_token_jwt" is on but "auth_oauth2_token_jwt_issuer" is not set/],
    ["auth_oauth2_token_jwt yes;", qr/"auth_oauth2_token_jwt" directive takes "on" or "off"/],
    ["auth_oauth2_token_jwt_issuer $ISS; auth_oauth2_token_jwt_issuer $ISS;",
        qr/"auth_oauth2_token_jwt_issuer" directive names the issuer "https:\/\/idp.test" twice/],
    ["auth_oauth2_token_jwt_issuer $ISS keys=$keys/missing.json;", qr/"auth_oauth2_token_jwt_issuer" directive cannot read/],
    ["auth_oauth2_token_jwt_issuer $ISS algorithms=HS256;", qr/cannot list HS256 for one issuer/],
    ["auth_oauth2_token_jwt_keys_file $keys/private.json;",
        qr/"auth_oauth2_token_jwt_keys_file" directive ".*private\.json" is not a usable JWK Set: a public key set holds private or symmetric key material \(member "d"\)/],
    ["auth_oauth2_token_jwt_keys_file $keys/empty.json;", qr/holds no key the module can verify with/],
    ["auth_oauth2_token_jwt_keys_file $keys/missing.json;", qr/"auth_oauth2_token_jwt_keys_file" directive cannot read/],
    ["auth_oauth2_token_jwt_algorithms RS256 none;", qr/"auth_oauth2_token_jwt_algorithms" directive has an unknown algorithm "none"/],
    ["auth_oauth2_token_jwt on; auth_oauth2_token_jwt_issuer $ISS; auth_oauth2_token_jwt_keys_file $keys/jwks.json; auth_oauth2_token_require_audience api; auth_oauth2_token_jwt_algorithms HS256;",
        qr/HS256 in "auth_oauth2_token_jwt_algorithms" needs "auth_oauth2_token_jwt_secret_file"/],
    ["auth_oauth2_token_jwt_secret_file $keys/secret;", qr/holds a secret that cannot be an HS256 key: HMAC secret of 5 bytes/],
    ["auth_oauth2_token_jwt_leeway 1h;", qr/"auth_oauth2_token_jwt_leeway" directive needs a time in whole seconds, at most 600s/],
    ["auth_oauth2_token_jwt_typ lax;", qr/"auth_oauth2_token_jwt_typ" directive takes "strict" or "relaxed"/],
    ["auth_oauth2_token_jwt_cache zone=j:1m stale_if_error=1m;", qr/"auth_oauth2_token_jwt_cache" directive has an unknown parameter "stale_if_error=1m"/],
) {
    my ($extra, $error) = @$case;
    my $dir = tempdir(CLEANUP => 1);
    mkdir "$dir/logs";
    spew_file("$dir/nginx.conf", "load_module $module;\nerror_log logs/error.log;\nevents {}\nhttp {\n"
        . "server {\nlisten 127.0.0.1:1;\nlocation / { $extra return 200; }\n}\n}\n");
    my $out = `$nginx -t -p $dir -c nginx.conf 2>&1`;
    isnt($?, 0, "nginx -t refuses: $extra");
    like($out, $error, "nginx -t names it: $extra");
}

done_testing();
