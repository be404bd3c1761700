# Certificate-bound tokens (RFC 8705 §3) checked at the gateway: the test
# IdP's introspection answer carries cnf["x5t#S256"], the SHA-256 of a client
# certificate made here with openssl; nginx listens with TLS and
# `ssl_verify_client optional_no_ca`; curl is the TLS client. The token
# passes only over a connection that presented that certificate, also on a
# cache hit; without a certificate, or with another valid one, it gets 401
# invalid_token; a cnf the module cannot check refuses the token.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use Digest::SHA qw(sha256);
use MIME::Base64 qw(encode_base64url);

for my $tool (qw(openssl curl)) {
    plan skip_all => "$tool not found" unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

start_servers();
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
sub openssl { system('openssl', @_) == 0 or die "openssl @_ failed" }
sub slurp_file { my ($f) = @_; open my $fh, '<:raw', $f or die "$f: $!"; local $/; <$fh> }

# A server certificate and two client certificates (self-signed: the
# binding is to the certificate itself, as optional_no_ca allows).
for my $name (qw(server alice mallory)) {
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', "$dir/$name.key", '-out', "$dir/$name.crt", '-days', '2', '-subj', "/CN=$name",
        '-addext', 'subjectAltName=DNS:localhost');
    openssl('x509', '-in', "$dir/$name.crt", '-outform', 'DER', '-out', "$dir/$name.der");
}
my $X5T = encode_base64url(sha256(slurp_file("$dir/alice.der")));

my $tls_port = OAuth2Test::reserve_port();
my ($BOUND, $ODD) = ('cert-bound-token-1', 'odd-cnf-token-1');
my $config = <<CONF;
listen 127.0.0.1:$tls_port ssl;
ssl_certificate $dir/server.crt;
ssl_certificate_key $dir/server.key;
ssl_verify_client optional_no_ca;
auth_oauth2_token_introspect on;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_client_secret s3cret;
add_header X-Error \$oauth2_token_error always;
location /api/ {
    proxy_set_header X-Cert \$oauth2_token_cert_thumbprint;
    proxy_pass http://backend;
}
location /cached/ {
    auth_oauth2_token_introspect_cache zone=intro:1m max_ttl=60s;
    proxy_pass http://backend;
}
location /front/ {
    auth_oauth2_token_client_cert_from 127.0.0.0/8 ::1;
    proxy_pass http://backend;
}
location /untrusted/ {
    auth_oauth2_token_client_cert_from 10.0.0.0/8;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

idp_setup({
    $BOUND => { json => { active => \1, sub => 'alice', cnf => { 'x5t#S256' => $X5T } } },
    $ODD   => { json => { active => \1, sub => 'eve', cnf => { 'x5t' => $X5T } } },
});
start_nginx(block_from(name => 'mtls', config => $config)) or BAIL_OUT('nginx');

# curl over TLS: the status and the WWW-Authenticate values.
sub tls_get {
    my (%o) = @_;
    my @cert = $o{cert} ? ('--cert', "$dir/$o{cert}.crt", '--key', "$dir/$o{cert}.key") : ();
    my @cmd = ('curl', '-sk', '-o', '/dev/null', '-D', '-', @cert,
        '-H', "Authorization: Bearer $o{token}", "https://localhost:$tls_port$o{uri}");
    open my $fh, '-|', @cmd or die "curl: $!";
    my $head = do { local $/; <$fh> };
    close $fh;
    my ($status) = $head =~ m{^HTTP/\S+ (\d+)}m;
    my @challenges = $head =~ /^WWW-Authenticate: ([^\r\n]*)/mig;
    return ($status // 0, join(' | ', @challenges));
}

sub backend_header {
    my ($name) = @_;
    my $last = backend_requests()->[-1] or return undef;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $last->{headers} };
    return $v[0];
}

my ($status, $challenge) = tls_get(uri => '/api/x', token => $BOUND, cert => 'alice');
is($status, 200, 'a certificate-bound token over a connection with its certificate passes');
is(backend_header('X-Cert'), $X5T, '$oauth2_token_cert_thumbprint is the certificate\'s x5t#S256');

($status, $challenge) = tls_get(uri => '/api/x', token => $BOUND);
is($status, 401, 'no client certificate: 401');
like($challenge, qr/^Bearer realm="api", error="invalid_token", error_description="the token is bound to a client certificate and none was presented"/,
    'no client certificate: invalid_token in the Bearer challenge');

($status, $challenge) = tls_get(uri => '/api/x', token => $BOUND, cert => 'mallory');
is($status, 401, 'another valid certificate: 401');
like($challenge, qr/error="invalid_token", error_description="the client certificate is not the one the token is bound to"/,
    'another certificate: said');

my $plain = http_request(raw_request('GET', '/api/x', ["Authorization: Bearer $BOUND"]));
is($plain->{status}, 401, 'over plain HTTP (no TLS at all): 401');

($status, $challenge) = tls_get(uri => '/api/x', token => $ODD, cert => 'alice');
is($status, 401, 'a cnf with a confirmation method the module cannot check: 401');
like($challenge, qr/error_description="the token's confirmation method cannot be checked"/, 'unverifiable cnf: said');

# Cache hits are checked again.
my $calls = scalar @{ idp_requests() };
is((tls_get(uri => '/cached/x', token => $BOUND, cert => 'alice'))[0], 200, 'cache miss with the certificate: 200');
is((tls_get(uri => '/cached/x', token => $BOUND, cert => 'alice'))[0], 200, 'cache hit with the certificate: 200');
is((tls_get(uri => '/cached/x', token => $BOUND, cert => 'mallory'))[0], 401, 'cache hit with another certificate: 401');
is((tls_get(uri => '/cached/x', token => $BOUND))[0], 401, 'cache hit without a certificate: 401');
is(scalar @{ idp_requests() } - $calls, 1, 'one IdP call: the rest were cache hits');

# A trusted front (RFC 9440): the certificate comes in Client-Cert from
# the configured addresses only, and never reaches the upstream.
use MIME::Base64 qw(encode_base64);
sub front_get {
    my ($uri, @certs) = @_;
    my @h = ("Authorization: Bearer $BOUND", map { 'Client-Cert: :' . encode_base64(slurp_file("$dir/$_.der"), '') . ':' } @certs);
    return http_request(raw_request('GET', $uri, \@h))->{status};
}
is(front_get('/front/x', 'alice'), 200, 'Client-Cert from a trusted front: the bound certificate passes');
my $last = backend_requests()->[-1];
is(scalar(grep { lc $_->[0] eq 'client-cert' } @{ $last->{headers} }), 0, 'the Client-Cert header is not forwarded upstream');
is(front_get('/front/x', 'mallory'), 401, 'Client-Cert from a trusted front: another certificate is refused');
is(front_get('/front/x'), 401, 'a trusted front without Client-Cert: refused');
is(front_get('/front/x', 'alice', 'alice'), 401, 'two Client-Cert headers: refused');
is(front_get('/untrusted/x', 'alice'), 401, 'Client-Cert from an address that is not a trusted front: ignored, refused');
is(front_get('/api/x', 'alice'), 401, 'Client-Cert where no front is trusted: ignored, refused');

done_testing();
