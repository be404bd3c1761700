# The Shared Signals transmitter authorized by its TLS client certificate
# (RFC 8935 allows mutual TLS): client_certificate= of
# auth_oauth2_token_ssf_receiver lists the accepted certificates' SHA-256
# thumbprints (base64url, or hex as `openssl x509 -fingerprint -sha256`
# prints it); nginx asks for a certificate (ssl_verify_client
# optional_no_ca) and the module checks it. A push with a listed
# certificate is accepted; without one it gets 400 authentication_failed,
# with another 400 access_denied; neither changes the list. curl is the
# TLS client, openssl makes the certificates.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use Digest::SHA qw(sha256);
use MIME::Base64 qw(encode_base64url);
use JSON::PP;

for my $tool (qw(openssl curl)) {
    plan skip_all => "$tool not found" unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}
my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
sub openssl { system('openssl', @_) == 0 or die "openssl @_ failed" }
sub slurp_file { my ($f) = @_; open my $fh, '<:raw', $f or die "$f: $!"; local $/; <$fh> }

for my $name (qw(server transmitter backup mallory)) {
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', "$dir/$name.key", '-out', "$dir/$name.crt", '-days', '2', '-subj', "/CN=$name",
        '-addext', 'subjectAltName=DNS:localhost');
    openssl('x509', '-in', "$dir/$name.crt", '-outform', 'DER', '-out', "$dir/$name.der");
}
my $X5T = encode_base64url(sha256(slurp_file("$dir/transmitter.der")));
my ($FINGERPRINT) = `openssl x509 -in $dir/backup.crt -noout -fingerprint -sha256` =~ /=([0-9A-F:]+)/;
ok($FINGERPRINT && length($FINGERPRINT) == 95, "openssl prints the backup's fingerprint ($FINGERPRINT)");

sub signed { return SsfTest::signed("$dir/t.jwk", "$dir/t.jwks", @_) }
signed();
my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
my $n = 0;
sub disabled {
    my ($who) = @_;
    my ($set) = signed({ claims => { iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => 'mtls-' . ++$n,
        events => { 'https://schemas.openid.net/secevent/risc/event-type/account-disabled' =>
            { subject => { format => 'iss_sub', iss => $ISS, sub => $who } } } } });
    return $set;
}

my $tls_port = OAuth2Test::reserve_port();
my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD keys=$dir/t.jwks"
    . " client_certificate=$X5T,$FINGERPRINT;";
my $config = <<CONF;
listen 127.0.0.1:$tls_port ssl;
ssl_certificate $dir/server.crt;
ssl_certificate_key $dir/server.key;
ssl_verify_client optional_no_ca;
location = /ssf { auth_oauth2_token_ssf_push; }
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF
idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20 } }) }
    qw(alice bob carol dave) });
start_nginx(block_from(name => 'ssf-mtls', config => $config, http_config => $http)) or BAIL_OUT('nginx');

# curl over TLS, with the client certificate $cert (or none): status, body.
sub tls_push {
    my ($set, $cert) = @_;
    open my $fh, '>', "$dir/set" or die $!;
    print $fh $set;
    close $fh;
    my @cert = $cert ? ('--cert', "$dir/$cert.crt", '--key', "$dir/$cert.key") : ();
    my @cmd = ('curl', '-sk', '-w', '\n%{http_code}', @cert, '-H', 'Content-Type: application/secevent+jwt',
        '--data-binary', "\@$dir/set", "https://localhost:$tls_port/ssf");
    open my $out, '-|', @cmd or die "curl: $!";
    my $text = do { local $/; <$out> };
    close $out;
    my ($body, $status) = $text =~ /^(.*)\n(\d+)$/s or return ('no answer');
    return ($status, eval { decode_json($body) });
}
sub get {
    my ($token) = @_;
    return http_request(raw_request('GET', '/api/', ["Authorization: Bearer $token"]))->{status};
}

my ($s, $j) = tls_push(disabled('alice'), 'transmitter');
is($s, 202, 'the transmitter\'s certificate (base64url thumbprint): accepted');
is(get('tok-alice'), 401, '... alice is refused');
($s, $j) = tls_push(disabled('bob'), 'backup');
is($s, 202, 'the backup certificate (hex fingerprint): accepted');
is(get('tok-bob'), 401, '... bob is refused');

($s, $j) = tls_push(disabled('carol'));
is($s, 400, 'no client certificate: 400');
is($j && $j->{err}, 'authentication_failed', '... authentication_failed');
($s, $j) = tls_push(disabled('carol'), 'mallory');
is($s, 400, 'another certificate: 400');
is($j && $j->{err}, 'access_denied', '... access_denied');
my $plain = http_request(raw_request('POST', '/ssf', ['Content-Type: application/secevent+jwt'], disabled('dave')));
is($plain->{status}, 400, 'plain HTTP (no TLS): 400');
like($plain->{body}, qr/"authentication_failed"/, '... authentication_failed');
is(get('tok-carol'), 200, 'the refused pushes changed nothing: carol passes');
is(get('tok-dave'), 200, '... dave passes');
stop_nginx();

like(OAuth2Test::run_must_die(block_from(name => 'bad thumbprint', config => '',
    http_config => "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys=$dir/t.jwks client_certificate=not-a-thumbprint;")), qr/SHA-256 thumbprints/,
    'nginx -t: a thumbprint that is none');

done_testing();
