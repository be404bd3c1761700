# Client authentication with signed assertions (private_key_jwt with RSA,
# EC and Ed25519 keys, client_secret_jwt) and for mutual TLS, as the IdP
# receives it: the form's members, the assertion's header and claims, a
# signature that verifies with the public key (openssl), a new jti per call;
# and the configuration mistakes nginx -t names.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use MIME::Base64 qw(decode_base64url);
use JSON::PP;
use Cwd ();

start_servers();

my $keys = tempdir(CLEANUP => 1);
chmod 0755, $keys;    # the workers run as nobody; the key is read by the master
sub openssl { system('openssl', @_) == 0 or die "openssl @_ failed" }
openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', "$keys/rsa.pem", '-quiet');
openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$keys/ec.pem");
openssl('genpkey', '-algorithm', 'ED25519', '-out', "$keys/ed.pem");
openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024', '-out', "$keys/small.pem", '-quiet');
for my $k (qw(rsa ec ed)) {
    openssl('pkey', '-in', "$keys/$k.pem", '-pubout', '-out', "$keys/$k.pub");
}

# client_secret_jwt signs with it: at least 32 bytes (RFC 7518 §3.2).
my $SECRET = 's3cret-s3cret-s3cret-s3cret-s3cret';

sub location {
    my ($method, $extra, $secret) = @_;
    $secret //= $SECRET;
    return <<CONF;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gateway-1;
    auth_oauth2_token_client_secret $secret;
    auth_oauth2_token_client_auth $method;
    auth_oauth2_token_client_assertion_audience https://idp.example/token;
    $extra
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF
}

sub form {
    my ($body) = @_;
    my %f;
    for (split /&/, $body) {
        my ($k, $v) = split /=/, $_, 2;
        $v =~ s/\+/ /g;
        $v =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
        $f{$k} = $v;
    }
    return \%f;
}

# Verifies a JWS with openssl: RS256/PS256/ES256 over SHA-256, EdDSA raw.
sub verifies {
    my ($jws, $pub, $alg) = @_;
    my ($h, $p, $s) = split /\./, $jws;
    my $dir = tempdir(CLEANUP => 1);
    open my $in, '>', "$dir/in" or die;
    print $in "$h.$p";
    close $in;
    my $sig = decode_base64url($s);
    if ($alg eq 'ES256') {    # r||s to DER
        my ($r, $ss) = map { my $x = $_; $x =~ s/^\x00+//; $x = "\x00$x" if ord($x) >= 0x80; $x }
            (substr($sig, 0, 32), substr($sig, 32));
        my $seq = pack('CC', 0x02, length $r) . $r . pack('CC', 0x02, length $ss) . $ss;
        $sig = pack('CC', 0x30, length $seq) . $seq;
    }
    open my $out, '>', "$dir/sig" or die;
    print $out $sig;
    close $out;
    my @opts = $alg eq 'PS256' ? ('-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:-1') : ();
    my $cmd = $alg eq 'EdDSA'
        ? "openssl pkeyutl -verify -pubin -inkey $pub -rawin -in $dir/in -sigfile $dir/sig"
        : "openssl dgst -sha256 -verify $pub @opts -signature $dir/sig $dir/in";
    my $result = `$cmd 2>&1`;
    return $result =~ /Verified OK|Signature Verified Successfully/;
}

for my $case (
    ['RS256', 'private_key_jwt', "auth_oauth2_token_client_key_file $keys/rsa.pem; auth_oauth2_token_client_key_id k-rsa;", "$keys/rsa.pub"],
    ['PS256', 'private_key_jwt', "auth_oauth2_token_client_key_file $keys/rsa.pem; auth_oauth2_token_client_assertion_alg PS256;", "$keys/rsa.pub"],
    ['ES256', 'private_key_jwt', "auth_oauth2_token_client_key_file $keys/ec.pem;", "$keys/ec.pub"],
    ['EdDSA', 'private_key_jwt', "auth_oauth2_token_client_key_file $keys/ed.pem;", "$keys/ed.pub"],
    ['HS256', 'client_secret_jwt', '', undef],
) {
    my ($alg, $method, $extra, $pub) = @$case;
    idp_setup({ t => { json => { active => \1 } } });
    start_nginx(block_from(name => "$alg", config => location($method, $extra))) or BAIL_OUT('nginx');
    for (1 .. 2) {
        my $r = http_request(raw_request('GET', '/', ['Authorization: Bearer t']));
        is($r->{status}, 200, "$alg: call $_ passes");
    }
    my @calls = @{ idp_requests() };
    is(scalar @calls, 2, "$alg: two IdP calls");
    my @forms = map { form($_->{body}) } @calls;
    my %headers = map { (lc $_->[0] => $_->[1]) } @{ $calls[0]{headers} };
    ok(!exists $headers{authorization}, "$alg: no Authorization header");
    is($forms[0]{client_assertion_type}, 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        "$alg: client_assertion_type");
    is($forms[0]{client_id}, 'gateway-1', "$alg: client_id");
    ok(!exists $forms[0]{client_secret}, "$alg: the secret itself is never sent");
    my ($h, $p) = map { decode_json(decode_base64url($_)) } (split /\./, $forms[0]{client_assertion})[0, 1];
    is($h->{alg}, $alg, "$alg: header alg");
    is($h->{kid}, 'k-rsa', "$alg: kid") if $extra =~ /k-rsa/;
    is_deeply([@$p{qw(iss sub aud)}], ['gateway-1', 'gateway-1', 'https://idp.example/token'], "$alg: iss, sub, aud");
    is($p->{exp} - $p->{iat}, 60, "$alg: valid for 60 s");
    ok(abs($p->{iat} - time) < 30, "$alg: iat is now");
    my $p2 = decode_json(decode_base64url((split /\./, $forms[1]{client_assertion})[1]));
    isnt($p2->{jti}, $p->{jti}, "$alg: every call has its own jti");
    ok(length($p->{jti}) >= 16, "$alg: a long random jti");
    if ($pub) {
        ok(verifies($forms[0]{client_assertion}, $pub, $alg), "$alg: the signature verifies with the public key");
    } else {
        require Digest::SHA;
        my ($hh, $pp, $ss) = split /\./, $forms[0]{client_assertion};
        is($ss, do { my $m = Digest::SHA::hmac_sha256_base64("$hh.$pp", $SECRET); $m =~ tr{+/}{-_}; $m },
            'HS256: the HMAC over the client secret verifies');
    }
    stop_nginx();
}

# Mutual TLS: only the client id in the form.
idp_setup({ t => { json => { active => \1 } } });
start_nginx(block_from(name => 'tls', config => location('tls_client_auth', ''))) or BAIL_OUT('nginx');
is(http_request(raw_request('GET', '/', ['Authorization: Bearer t']))->{status}, 200, 'tls_client_auth: passes');
my ($call) = @{ idp_requests() };
is($call->{body}, 'token=t&token_type_hint=access_token&client_id=gateway-1', 'tls_client_auth: only client_id');
ok(!grep({ lc $_->[0] eq 'authorization' } @{ $call->{headers} }), 'tls_client_auth: no Authorization');
stop_nginx();

# Configuration mistakes fail nginx -t naming the directive.
my $nginx = $ENV{TEST_NGINX_BINARY} || 'objs/nginx';
my $module = $ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so';
$module = Cwd::abs_path($module);
for my $case (
    ['private_key_jwt', "auth_oauth2_token_client_key_file $keys/small.pem;", qr/"auth_oauth2_token_client_key_file" directive holds an RSA key of 1024 bits/],
    ['private_key_jwt', "auth_oauth2_token_client_key_file $keys/missing.pem;", qr/"auth_oauth2_token_client_key_file" directive cannot read/],
    ['private_key_jwt', "auth_oauth2_token_client_key_file $keys/rsa.pub;", qr/"auth_oauth2_token_client_key_file" directive cannot read a PEM private key/],
    ['private_key_jwt', '', qr/needs "auth_oauth2_token_client_key_file"/],
    ['private_key_jwt', "auth_oauth2_token_client_key_file $keys/ed.pem; auth_oauth2_token_client_assertion_alg RS256;", qr/"auth_oauth2_token_client_key_file" holds a key that cannot sign RS256/],
    ['client_secret_jwt', 'auth_oauth2_token_client_assertion_alg ES256;', qr/must be HS256 with client_secret_jwt/],
    ['client_secret_jwt', '', qr/"auth_oauth2_token_client_auth client_secret_jwt" signs with the client secret, and the one of "auth_oauth2_token_client_secret" is 31 bytes: HS256 needs a key of at least 32 bytes \(RFC 7518 §3\.2\)/,
        'x' x 31],
    ['private_jwt', '', qr/"auth_oauth2_token_client_auth" directive takes/],
) {
    my ($method, $extra, $error, $secret) = @$case;
    my $dir = tempdir(CLEANUP => 1);
    mkdir "$dir/logs";
    open my $fh, '>', "$dir/nginx.conf" or die;
    print $fh "load_module $module;\nerror_log logs/error.log;\nevents {}\nhttp {\n"
        . "upstream idp { server 127.0.0.1:1; }\nupstream backend { server 127.0.0.1:1; }\n"
        . "server {\nlisten 127.0.0.1:1;\n" . location($method, $extra, $secret) . "}\n}\n";
    close $fh;
    my $out = `$nginx -t -p $dir -c nginx.conf 2>&1`;
    isnt($?, 0, "nginx -t refuses: $method $extra");
    like($out, $error, "nginx -t names it: $method $extra");
}

done_testing();
