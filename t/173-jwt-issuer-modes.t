# Several issuers on one location, each in its own mode (mode= of
# auth_oauth2_token_jwt_issuer): `jwt` tokens are checked here and never
# introspected (their verdict cached in the JWT zone), `jwt+introspect`
# tokens are checked here and then introspected (a revoked one refused, a
# forged one never reaching the IdP), `introspect` tokens go to the IdP
# unchecked; IdP calls are counted per mode. Tokens are signed here with
# openssl (Ed25519); the IdP is the test IdP. And the mode mistakes that
# nginx -t names.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64url);
use JSON::PP;
use Cwd ();

start_servers();

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
sub openssl { system('openssl', @_) == 0 or die "openssl @_ failed" }
sub slurp_file { my ($f) = @_; open my $fh, '<:raw', $f or die "$f: $!"; local $/; <$fh> }
sub spew_file { my ($f, $d) = @_; open my $fh, '>:raw', $f or die "$f: $!"; print $fh $d; close $fh }

# One Ed25519 key per issuer, its public JWK Set in a file.
for my $k (qw(a b)) {
    openssl('genpkey', '-algorithm', 'ED25519', '-out', "$dir/$k.pem");
    openssl('pkey', '-in', "$dir/$k.pem", '-pubout', '-outform', 'DER', '-out', "$dir/$k.der");
    my $x = encode_base64url(substr(slurp_file("$dir/$k.der"), -32));
    spew_file("$dir/$k.json", encode_json({ keys => [{ kty => 'OKP', crv => 'Ed25519', kid => "$k-1", x => $x }] }));
}

my $JSON = JSON::PP->new->canonical;
my $NOW = time;
sub token {
    my ($key, $iss, %over) = @_;
    my $claims = { iss => $iss, aud => 'api', sub => "user-of-$key", exp => $NOW + 300, iat => $NOW,
        jti => 'j' . rand(), %over };
    my $input = encode_base64url($JSON->encode({ alg => 'EdDSA', typ => 'at+jwt', kid => "$key-1" }))
        . '.' . encode_base64url($JSON->encode($claims));
    spew_file("$dir/in", $input);
    openssl('pkeyutl', '-sign', '-inkey', "$dir/$key.pem", '-rawin', '-in', "$dir/in", '-out', "$dir/sig");
    return "$input." . encode_base64url(slurp_file("$dir/sig"));
}

my $config = <<CONF;
location /mixed/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer https://a.test keys=$dir/a.json mode=jwt;
    auth_oauth2_token_jwt_issuer https://b.test keys=$dir/b.json mode=jwt+introspect;
    auth_oauth2_token_jwt_issuer https://c.test mode=introspect;
    auth_oauth2_token_jwt_cache zone=jwt_modes:1m;
    auth_oauth2_token_introspect_cache zone=modes_introspect:1m;
    auth_oauth2_token_require_audience api;
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    add_header X-Cache \$oauth2_token_cache_status always;
    proxy_set_header X-Sub \$oauth2_token_sub;
    proxy_pass http://backend;
}
location /partners/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer https://a.test keys=$dir/a.json audience=api-a;
    auth_oauth2_token_jwt_issuer https://b.test keys=$dir/b.json audience=api-b,api-b2;
    proxy_pass http://backend;
}
location /routed/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer https://a.test keys=$dir/a.json introspect=/_introspect_a;
    auth_oauth2_token_jwt_issuer https://b.test keys=$dir/b.json;
    auth_oauth2_token_require_audience api;
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_introspect_cache zone=routed:1m;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_introspect_a { internal; proxy_pass http://idp/introspect-a; }
CONF

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    my %h = map { (lc $_->[0] => $_->[1]) } @{ $r->{headers} };
    $r->{h} = \%h;
    return $r;
}

sub calls_for {
    my ($token) = @_;
    return scalar grep { ($_->{body} // '') =~ /token=\Q$token\E(&|$)/ } @{ idp_requests() };
}

my $a_tok = token('a', 'https://a.test');
my $b_tok = token('b', 'https://b.test');
my $b_revoked = token('b', 'https://b.test');
my $c_tok = token('b', 'https://c.test');    # signed by a key c has not: c checks nothing here
my $b_forged = $b_tok;
substr($b_forged, -5, 1) = substr($b_forged, -5, 1) eq 'A' ? 'B' : 'A';
my $a_routed = token('a', 'https://a.test');
my $b_routed = token('b', 'https://b.test');
idp_setup({
    $a_routed  => { json => { active => \1, sub => 'user-of-a', aud => 'api' } },
    $b_routed  => { json => { active => \1, sub => 'user-of-b', aud => 'api' } },
    $b_tok     => { json => { active => \1, sub => 'user-of-b', aud => 'api' } },
    $b_revoked => { json => { active => \0 } },
    $c_tok     => { json => { active => \1, sub => 'carol', aud => 'api' } },
});
start_nginx(block_from(name => 'modes', config => $config)) or BAIL_OUT('nginx');

my $r = get('/mixed/x', $a_tok);
is($r->{status}, 200, 'mode=jwt: the token passes');
is($r->{h}{'x-cache'}, 'MISS', 'mode=jwt: checked here, then cached');
is(get('/mixed/x', $a_tok)->{h}{'x-cache'}, 'HIT', 'mode=jwt: a repeat is a hit in the JWT zone');
is(calls_for($a_tok), 0, 'mode=jwt: never introspected');

is(get('/mixed/x', $b_tok)->{status}, 200, 'mode=jwt+introspect: the token passes');
is(get('/mixed/x', $b_tok)->{status}, 200, 'mode=jwt+introspect: again');
is(calls_for($b_tok), 1, 'mode=jwt+introspect: one introspection, then the introspection cache');
is(get('/mixed/x', $b_revoked)->{status}, 401, 'mode=jwt+introspect: a token the IdP revoked is refused');
is(calls_for($b_revoked), 1, 'mode=jwt+introspect: the IdP was asked about it');
my $forged = get('/mixed/x', $b_forged);
is($forged->{status}, 401, 'mode=jwt+introspect: a forged token is refused');
like($forged->{h}{'www-authenticate'} // '', qr/error_description="the token's signature is invalid"/,
    'mode=jwt+introspect: saying why');
is(calls_for($b_forged), 0, 'mode=jwt+introspect: a forged token never reaches the IdP');

is(get('/mixed/x', $c_tok)->{status}, 200, 'mode=introspect: passes on the IdP\'s word alone');
is(calls_for($c_tok), 1, 'mode=introspect: introspected');
is(backend_requests()->[-1] && (map { $_->[1] } grep { lc $_->[0] eq 'x-sub' } @{ backend_requests()->[-1]{headers} })[0],
    'carol', 'mode=introspect: the claims are the IdP\'s');

my $stranger = token('a', 'https://d.test');
$r = get('/mixed/x', $stranger);
is($r->{status}, 401, 'an issuer the location does not name: 401');
is(calls_for($stranger), 0, 'and no IdP call');
is(scalar @{ idp_requests() }, 3, 'three IdP calls in all: one per token of the modes that introspect');

# Each issuer with its own introspection endpoint (introspect=), or the location's.
my $asked = scalar @{ idp_requests() };
is(get('/routed/x', $a_routed)->{status}, 200, 'introspect=: the token passes');
is(get('/routed/x', $b_routed)->{status}, 200, 'the other issuer\'s token passes');
is(get('/routed/x', $a_routed)->{status}, 200, 'introspect=: again, from the cache');
my @paths = map { $_->{path} } @{ idp_requests() }[$asked .. $#{ idp_requests() }];
is_deeply(\@paths, ['/introspect-a', '/introspect'], 'each issuer\'s token asked at its own endpoint, once');

# Each issuer with its own audience.
is(get('/partners/x', token('a', 'https://a.test', aud => 'api-a'))->{status}, 200, 'audience=: a token for its issuer\'s audience passes');
is(get('/partners/x', token('b', 'https://b.test', aud => ['api-b2']))->{status}, 200, 'audience=: any audience of the list');
$r = get('/partners/x', token('b', 'https://b.test', aud => 'api-a'));
is($r->{status}, 401, 'audience=: another issuer\'s audience is refused');
like($r->{h}{'www-authenticate'} // '', qr/error_description="the token is not meant for this resource"/, 'audience=: saying why');
stop_nginx();

# Mode mistakes fail nginx -t, naming the issuer.
my $nginx = $ENV{TEST_NGINX_BINARY} || 'objs/nginx';
my $module = Cwd::abs_path($ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so');
for my $case (
    ["auth_oauth2_token_jwt_issuer https://a.test keys=$dir/a.json mode=introspect;",
        qr/"https:\/\/a.test" has mode=introspect but the location does not introspect/],
    ["auth_oauth2_token_jwt_issuer https://a.test keys=$dir/a.json mode=both;",
        qr/takes mode=jwt, mode=jwt\+introspect or mode=introspect/],
    ["auth_oauth2_token_jwt_issuer https://a.test keys_request=/_jwks;",
        qr/needs "auth_oauth2_token_jwt_keys_cache"/],
    ["auth_oauth2_token_jwt_issuer https://a.test keys=$dir/a.json introspect=/_a;",
        qr/"https:\/\/a.test" has introspect= but its tokens are not introspected \(mode=jwt\)/],
) {
    my ($directives, $error) = @$case;
    spew_file("$dir/nginx.conf", <<CONF);
load_module $module;
error_log stderr;
events {}
http {
    server {
        listen 127.0.0.1:1;
        location / {
            auth_oauth2_token_jwt on;
            auth_oauth2_token_require_audience api;
            $directives
        }
    }
}
CONF
    my $out = `$nginx -t -p $dir -c $dir/nginx.conf 2>&1`;
    like($out, $error, "nginx -t: $directives");
}

done_testing();
