# Interop with a real authorization server: npm oidc-provider (t/oidc/, pinned
# by its lockfile), over HTTPS, through the module's subrequests. Three parts:
#
# 1. Through nginx: introspection with client_secret_basic and
#    client_secret_post (active -> 200 with the token's sub at the backend,
#    inactive -> 401, wrong secret -> 502 "client credentials rejected"), the
#    RFC 8693 exchange at the provider's token endpoint, the TLS client
#    certificate of the internal location (proxy_ssl_certificate) reaching the
#    provider for tls_client_auth and self_signed_tls_client_auth, and what
#    happens with two client certificates for one IdP.
# 2. The provider alone, for the other client-authentication methods
#    (private_key_jwt, client_secret_jwt, the mTLS ones): hand-made client
#    assertions and client certificates, and what it answers when they are
#    wrong. These prove the provider side of part 3.
# 3. Those methods through nginx (auth_oauth2_token_client_auth
#    client_secret_jwt, private_key_jwt, tls_client_auth,
#    self_signed_tls_client_auth): a fresh jti per call, never a replayed
#    assertion, aud = the issuer, no client_secret at all, and a key the
#    provider does not know -> 502 "client credentials rejected".
#
# The internal locations verify the provider's certificate against the test CA
# (proxy_ssl_verify on). nginx checks the name with X509_check_host, which
# never matches an IP address SAN: proxy_ssl_name is "localhost", a DNS SAN of
# the test server certificate. The Host header stays 127.0.0.1:PORT (nginx's
# $proxy_host), so the URLs oidc-provider builds from it equal the issuer's.
#
# Needs node (20+), openssl and npm (the first run does `npm ci` in t/oidc):
# without them the file is skipped with the reason, or fails with
# TEST_OIDC_REQUIRED=1.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use OIDCProvider qw(:DEFAULT decode_jwt);
use OAuth2Test;
use Time::HiRes qw(time);
use MIME::Base64 ();
use JSON::PP;

require_oidc_provider();
start_servers();
my $op = start_oidc_provider();
note("oidc-provider $op->{version} on Node.js $op->{node} at $op->{issuer}");

my $ISSUER = $op->{issuer};
my $SUB = $op->{token_sub};
my $CAT = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
my $TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
my $AT = 'urn:ietf:params:oauth:token-type:access_token';
my %CLIENT = %{ $op->{client_for} };
sub secret_of { $op->{clients}{ $_[0] }{client_secret} }

# ---- helpers -----------------------------------------------------------------

# The server{} body: /api/ checked with the given client (and exchanging when
# asked), the internal locations proxying to the provider over verified TLS.
sub gateway {
    my (%o) = @_;
    my $id = $o{client};
    my @auth = ("auth_oauth2_token_client_id $id;");
    my $secret = $o{secret} // secret_of($id);
    push @auth, qq{auth_oauth2_token_client_secret "$secret";} if defined $secret && !$o{no_secret};
    push @auth, "auth_oauth2_token_client_auth $o{client_auth};" if $o{client_auth};
    push @auth, @{ $o{directives} // [] };
    my @check;
    push @check, 'auth_oauth2_token_introspect on;', 'auth_oauth2_token_introspect_endpoint /_introspect;'
        if $o{introspect} // 1;
    push @check, 'auth_oauth2_token_exchange on;', 'auth_oauth2_token_token_endpoint /_token;',
        'auth_oauth2_token_audience orders-api;' if $o{exchange};
    my $tls = join "\n", "proxy_ssl_verify on;", "proxy_ssl_trusted_certificate $op->{ca};",
        'proxy_ssl_name localhost;', 'subrequest_output_buffer_size 64k;',
        ($o{cert} ? ("proxy_ssl_certificate $o{cert}{cert};", "proxy_ssl_certificate_key $o{cert}{key};") : ());
    my $check = join "\n    ", @check, @auth;
    my $write = $o{exchange} ? <<"WRITE" : '';
location /api-write/ {
    $check
    auth_oauth2_token_scope orders:write;
    proxy_pass http://backend;
}
WRITE
    return <<"CONF";
location /api/ {
    $check
    auth_oauth2_token_scope orders:read;
    proxy_set_header X-Token-Sub \$oauth2_token_sub;
    proxy_set_header X-Token-Client \$oauth2_token_client_id;
    proxy_pass http://backend;
}
$write
location = /_introspect {
    internal;
    proxy_pass $op->{introspection_endpoint};
    $tls
}
location = /_token {
    internal;
    proxy_pass $op->{token_endpoint};
    $tls
}
CONF
}

sub api {
    my ($token, $uri) = @_;
    return http_request({ method => 'GET', uri => $uri // '/api/orders', headers => ["Authorization: Bearer $token"] });
}

sub failures { scalar grep { !$_ } Test::More->builder->summary }

# One nginx with $config for the duration of $code; the provider's and the
# backend's records start empty. On a failure: nginx's errors, what the
# provider recorded, its output.
sub with_nginx {
    my ($name, $config, $code) = @_;
    idp_reset();
    $op->log_clear;
    my $before = failures();
    if (start_nginx(block_from(name => $name, config => $config))) {
        subtest $name => $code;
    }
    if (failures() > $before) {
        diag("error.log (warn and above):\n" . join "\n", grep { /\[(?:warn|error|crit|alert|emerg)\]/ }
            split /\n/, error_log_text());
        diag("provider records:\n" . join "\n", map { JSON::PP->new->canonical->encode($_) } $op->log);
    }
    stop_nginx();
}

sub last_backend_header {
    my ($name) = @_;
    my $reqs = backend_requests();
    return undef unless @$reqs;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $reqs->[-1]{headers} };
    return @v == 1 ? $v[0] : @v ? join(' | ', @v) : undef;
}

sub status_is {
    my ($r, $want, $what) = @_;
    is($r->{status}, $want, $what)
        or diag("response: " . ($r->{error} // '') . "\n$r->{raw}");
}

# ---- 1. through nginx, today ---------------------------------------------------

# Every active token of this file at once (each node client process costs ~0.1 s).
my ($active1, $active2, $active3, $active4, $active5, $active6, $mtls_token, $subject) = oidc_tokens(8);
my ($revoked1, $revoked2, $revoked3) = oidc_inactive_tokens(3);
my $random = 'not-a-token-' . int(rand(1e9));

for my $case (
    [client_secret_basic => 'basic', $active1, $revoked1],
    [client_secret_post  => 'post',  $active2, $revoked2],
) {
    my ($method, $mode, $active, $revoked) = @$case;
    my $id = $CLIENT{$method};
    with_nginx("$method ($id): active 200 with sub, inactive 401, unknown 401",
        gateway(client => $id, client_auth => $mode), sub {
        my $r = api($active);
        status_is($r, 200, 'active token passes');
        is(last_backend_header('X-Token-Sub'), $SUB, '$oauth2_token_sub reaches the backend');
        is(last_backend_header('X-Token-Client'), $CLIENT{client_credentials}, '$oauth2_token_client_id too');
        my ($call) = $op->log;
        is($call->{route}, 'introspection', 'the provider got an introspection request');
        is($call->{client_id}, $id, "as $id");
        is($call->{presented_auth}, $method, "authenticated with $method");
        ok($call->{client_authenticated}, 'which the provider accepted');
        ok($call->{active}, 'and answered active');
        if ($method eq 'client_secret_basic') {
            is($call->{basic_client_id}, $id, 'Basic credentials, form-urlencoded (RFC 6749 2.3.1)');
            ok(!$call->{has_client_secret}, 'no client_secret in the body');
        } else {
            ok(!$call->{authorization_scheme}, 'no Authorization header');
            is($call->{body_client_id}, $id, 'client_id in the body');
        }

        $r = api($revoked);
        status_is($r, 401, 'a revoked token is refused');
        like(join(' ', map { $_->[1] } grep { lc $_->[0] eq 'www-authenticate' } @{ $r->{headers} }),
            qr/error="invalid_token"/, 'with error="invalid_token"');
        $r = api($random);
        status_is($r, 401, 'an unknown token is refused');
        my @calls = $op->log;
        is(scalar @calls, 3, 'three introspection calls in all');
        is_deeply([map { $_->{active} ? 1 : 0 } @calls], [1, 0, 0], 'active, inactive, inactive');
        is(scalar @{ backend_requests() }, 1, 'only the active token reached the backend');
    });

    with_nginx("$method ($id): a wrong secret is 502, logged as rejected credentials",
        gateway(client => $id, client_auth => $mode, secret => 'wrong-secret'), sub {
        my $r = api($active);
        status_is($r, 502, 'the IdP refusing the gateway is 502');
        like(error_log_text(), qr/client credentials rejected/, 'error.log: "client credentials rejected"');
        my ($call) = $op->log;
        is($call->{status}, 401, 'the provider answered 401');
        is($call->{error}, 'invalid_client', 'invalid_client');
        is($call->{error_detail}, 'invalid secret provided', 'because of the secret');
        is(scalar @{ backend_requests() }, 0, 'nothing reached the backend');
    });
}

with_nginx('exchange (client_secret_basic): introspect, then RFC 8693 at the token endpoint',
    gateway(client => $CLIENT{client_secret_basic}, exchange => 1), sub {
    my $r = api($active3);
    status_is($r, 200, 'passes');
    my $auth = last_backend_header('Authorization') // '';
    my ($new) = $auth =~ /^Bearer (\S+)$/;
    ok($new, 'the backend got one Bearer token') or diag("Authorization: $auth");
    isnt($new, $active3, 'not the client\'s');
    is(last_backend_header('X-Token-Sub'), $SUB, 'the introspected sub');
    my @calls = $op->log;
    is_deeply([map { $_->{route} } @calls], [qw(introspection token)], 'introspection, then the token endpoint');
    is($calls[1]{grant_type}, $TE, 'the token-exchange grant');
    is($calls[1]{audience}, 'orders-api', 'for the configured audience');
    is($calls[1]{scope}, 'orders:read', 'and scope');
    is($calls[1]{subject_token_type}, $AT, 'subject_token_type access_token');
    is($calls[1]{client_id}, $CLIENT{client_secret_basic}, 'as the gateway client');
    ok($calls[1]{client_authenticated}, 'authenticated');
    is($calls[1]{status}, 200, 'issued');
    my $i = oidc_request({ path => '/token/introspection', form => [token => $new // ''],
        basic => [$CLIENT{client_secret_basic}, secret_of($CLIENT{client_secret_basic})] });
    my $claims = $i->{json} // {};
    ok($claims->{active}, 'the exchanged token is active at the provider');
    is($claims->{aud}, 'orders-api', 'for orders-api');
    is($claims->{sub}, $SUB, 'same subject');
    is($claims->{act}{sub}, $CLIENT{client_secret_basic}, 'the gateway as actor');
});

with_nginx('exchange only (client_secret_post): 200, inactive 401 (invalid_grant), scope beyond 403 (invalid_scope)',
    gateway(client => $CLIENT{client_secret_post}, client_auth => 'post', exchange => 1, introspect => 0), sub {
    my $r = api($active4);
    status_is($r, 200, 'an active token is exchanged');
    my ($new) = (last_backend_header('Authorization') // '') =~ /^Bearer (\S+)$/;
    ok($new && $new ne $active4, 'the backend got the new token');
    $r = api($revoked3);
    status_is($r, 401, 'a revoked token is refused');
    $r = api($active4, '/api-write/orders');
    status_is($r, 403, 'a scope the subject token lacks is refused');
    my @calls = $op->log;
    is_deeply([map { "$_->{route} $_->{status} " . ($_->{error} // '-') } @calls],
        ['token 200 -', 'token 400 invalid_grant', 'token 400 invalid_scope'], 'what the provider answered');
    is_deeply([map { $_->{presented_auth} } @calls], [('client_secret_post') x 3], 'client_secret_post each time');
});

# The internal location's TLS client certificate authenticates the gateway.
# Today's module can do it with `client_auth post` and no secret: it sends
# `client_id=...&client_secret=` and oidc-provider reads an empty client_secret
# as none (another IdP may refuse it; see the pending blocks for a mode that
# sends client_id alone).
for my $case (
    [tls_client_auth             => $op->{tls_client},         200],
    [self_signed_tls_client_auth => $op->{self_signed_client}, 200],
    ['tls_client_auth, a certificate with another subject DN' => $op->{other_tls_client}, 502],
) {
    my ($what, $cert, $want) = @$case;
    my ($method) = $what =~ /^(\w+)/;
    my $id = $CLIENT{$method};
    with_nginx("$what ($id): proxy_ssl_certificate, client_auth post without a secret: $want",
        gateway(client => $id, client_auth => 'post', no_secret => 1, cert => $cert), sub {
        my $r = api($want == 200 ? $active5 : $active6);
        status_is($r, $want, "status $want");
        my ($call) = $op->log;
        is($call->{client_id}, $id, "the provider looked up $id");
        ok($call->{tls_client_cert}, 'and saw the client certificate of nginx\'s upstream connection');
        ok($call->{client_secret_empty}, 'with an empty client_secret in the body (today)');
        if ($want == 200) {
            is($call->{auth_method}, $method, "authenticated by $method");
            ok($call->{client_authenticated}, 'accepted');
            is(last_backend_header('X-Token-Sub'), $SUB, 'the sub reaches the backend');
        } else {
            is($call->{error_detail}, 'certificate subject value does not match the registered one',
                'refused: the subject DN differs');
            like(error_log_text(), qr/client credentials rejected/, 'error.log: "client credentials rejected"');
        }
    });
}

# Two locations, two client certificates, one IdP. nginx hands a location the
# TLS session (implicit upstreams of the same host:port are one upstream) or
# the kept-alive connection (one upstream{} with keepalive) that another
# location opened with its own certificate: the IdP then sees the first
# location's certificate. Only one upstream{} per certificate keeps them apart.
for my $case (
    ['one implicit upstream, TLS sessions reused (nginx default)', 'implicit', 0],
    ['one upstream{} with keepalive, proxy_ssl_session_reuse off', 'shared', 0],
    ['one upstream{} with keepalive per certificate', 'separate', 1],
) {
    my ($what, $layout, $works) = @$case;
    my $P = $op->{port};
    my $http = $layout eq 'shared' ? "upstream oidc { server 127.0.0.1:$P; keepalive 4; }"
        : $layout eq 'separate' ? "upstream oidc_a { server 127.0.0.1:$P; keepalive 4; }\n"
            . "upstream oidc_b { server 127.0.0.1:$P; keepalive 4; }" : '';
    my $loc = sub {
        my ($name, $method, $cert) = @_;
        my $upstream = $layout eq 'implicit' ? "127.0.0.1:$P" : $layout eq 'shared' ? 'oidc' : "oidc_$name";
        my $reuse = $layout eq 'shared' ? 'proxy_ssl_session_reuse off;' : '';
        return <<"CONF";
location /$name/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect_$name;
    auth_oauth2_token_client_id $CLIENT{$method};
    auth_oauth2_token_client_auth post;
    proxy_set_header X-Token-Sub \$oauth2_token_sub;
    proxy_pass http://backend;
}
location = /_introspect_$name {
    internal;
    proxy_pass https://$upstream/token/introspection;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $op->{ca};
    proxy_ssl_name localhost;
    proxy_ssl_certificate $cert->{cert};
    proxy_ssl_certificate_key $cert->{key};
    $reuse
}
CONF
    };
    my $config = $loc->('a', 'tls_client_auth', $op->{tls_client})
        . $loc->('b', 'self_signed_tls_client_auth', $op->{self_signed_client});
    idp_reset();
    $op->log_clear;
    my $before = failures();
    if (start_nginx(block_from(name => $what, http_config => $http, config => $config))) {
        subtest "two client certificates to one IdP: $what" => sub {
            my @r = map { api($mtls_token, "/$_/orders") } qw(a b a b);
            my @calls = $op->log;
            is_deeply([map { $_->{status} } @r[0, 2]], [200, 200], '/a/ (tls_client_auth) passes');
            is_deeply([map { $_->{tls_client_cert}{subject} // '' } @calls[0, 2]],
                [('O=oauth2-test, CN=gw-tls') x 2], 'with its certificate');
            local $TODO = $works ? undef
                : 'nginx gives /b/ the TLS session or connection /a/ opened with its certificate';
            is_deeply([map { $_->{status} } @r[1, 3]], [200, 200], '/b/ (self_signed_tls_client_auth) passes');
            is_deeply([map { $_->{tls_client_cert}{subject} // '' } @calls[1, 3]],
                [('CN=gw-self-signed-tls') x 2], 'with its own certificate');
        };
    }
    diag(join "\n", map { JSON::PP->new->canonical->encode($_) } $op->log) if failures() > $before;
    stop_nginx();
}

# ---- 2. the provider alone: the other client-authentication methods ---------------

my %intro = (path => '/token/introspection');
my %exchange_form = (grant_type => $TE, subject_token => $subject, subject_token_type => $AT, audience => 'orders-api');

sub assertion_request {
    my ($assertion, %o) = @_;
    my @form = $o{exchange} ? %exchange_form : (token => $subject);
    return { path => $o{exchange} ? '/token' : '/token/introspection',
        form => [@form, ($o{client_id} ? (client_id => $o{client_id}) : ()),
            client_assertion_type => $CAT, client_assertion => $assertion], headers => $o{headers} };
}

sub outcome {
    my ($r) = @_;
    return "$r->{status} " . ($r->{json} && $r->{json}{active} ? 'active'
        : $r->{json} && $r->{json}{access_token} ? 'issued' : $r->{json}{error} // $r->{body});
}

subtest 'provider: private_key_jwt (RSA, EC P-256, Ed25519 keys of the client JWKS)' => sub {
    my $id = $CLIENT{private_key_jwt};
    $op->log_clear;
    my @algs = qw(RS256 PS256 ES256 EdDSA Ed25519);
    my %a = map { $_ => oidc_client_assertion(alg => $_) } @algs;
    my $wrong_aud = oidc_client_assertion(aud => "$ISSUER/token/introspection");
    my @r = oidc_request(
        (map { assertion_request($a{$_}, client_id => $id) } @algs),
        assertion_request(oidc_client_assertion(alg => 'ES256'), exchange => 1),
        assertion_request($a{RS256}),                                    # replayed, same endpoint
        assertion_request($a{ES256}, exchange => 1),                     # replayed, other endpoint
        assertion_request(oidc_client_assertion(aud => "$ISSUER/token")),   # token endpoint URL, at introspection
        assertion_request(oidc_client_assertion(aud => "$ISSUER/token/introspection")),
        assertion_request($wrong_aud, exchange => 1),                    # introspection URL at the token endpoint
        assertion_request(oidc_client_assertion(aud => 'https://elsewhere.example')),
        assertion_request(oidc_client_assertion(key_file => $op->{unregistered_key}, alg => 'ES256', kid => undef)),
        assertion_request(oidc_client_assertion(kid => 'no-such-kid')),
        assertion_request(oidc_client_assertion(claims => { jti => undef })),
        assertion_request(oidc_client_assertion(claims => { exp => undef })),
        assertion_request(oidc_client_assertion(iat => time - 300, exp => time - 60)),
        assertion_request(oidc_client_assertion(alg => 'HS256', client_id => $id, secret => 'x' x 32)),
    );
    is_deeply([map { outcome($_) } @r], [
        ('200 active') x 5, '200 issued',
        '401 invalid_client', '401 invalid_client',
        '200 active', '200 active', '401 invalid_client', '401 invalid_client',
        ('401 invalid_client') x 6,
    ], 'what the provider answered') or diag(join "\n", map { "$_->{status} $_->{body}" } @r);
    my @log = $op->log;
    is_deeply([map { $_->{error_detail} // '-' } @log], [
        ('-') x 6,
        ('client assertion tokens must only be used once') x 2,
        '-', '-',
        ('audience (aud) must equal the endpoint url, issuer identifier or token endpoint url') x 2,
        'signature verification failed',                       # a key not in the JWKS, no kid
        'no applicable key found in the JSON Web Key Set',     # a kid not in the JWKS
        'unique jti (JWT ID) must be provided in the client_assertion JWT',
        'expiration must be specified in the client_assertion JWT',
        'jwt expired',
        'alg mismatch',
    ], 'why (the provider\'s internal detail; the answer says only "client authentication failed")');
    is($r[6]{body}, '{"error":"invalid_client","error_description":"client authentication failed"}',
        'a refused assertion: 401 with that body');
    my @ok = grep { $_->{status} == 200 } @log;
    my %jti = map { $_->{jti} => 1 } @ok;
    is(scalar keys %jti, scalar @ok, 'every accepted call had its own jti');
    is_deeply([map { $_->{auth_method} } @ok[0 .. 5]], [('private_key_jwt') x 6], 'authenticated as private_key_jwt');
};

subtest 'provider: client_secret_jwt (HS256 with the client secret)' => sub {
    my $id = $CLIENT{client_secret_jwt};
    $op->log_clear;
    my $a = oidc_client_assertion(alg => 'HS256');
    my @r = oidc_request(
        assertion_request($a, client_id => $id),
        assertion_request(oidc_client_assertion(alg => 'HS256'), exchange => 1),
        assertion_request($a),
        assertion_request(oidc_client_assertion(alg => 'HS256', secret => 'not-the-secret-' . ('x' x 40))),
        assertion_request(oidc_client_assertion(alg => 'RS256', client_id => $id)),
    );
    is_deeply([map { outcome($_) } @r],
        ['200 active', '200 issued', '401 invalid_client', '401 invalid_client', '401 invalid_client'],
        'accepted at both endpoints; replay, a wrong secret, an RSA signature refused')
        or diag(join "\n", map { "$_->{status} $_->{body}" } @r);
    is_deeply([map { $_->{error_detail} // '-' } $op->log],
        ['-', '-', 'client assertion tokens must only be used once', 'signature verification failed', 'alg mismatch'],
        'why');
    is((decode_jwt($a))[0]{alg}, 'HS256', 'HS256');
};

subtest 'provider: tls_client_auth and self_signed_tls_client_auth (certificate of the TLS connection)' => sub {
    $op->log_clear;
    my $tls = $CLIENT{tls_client_auth};
    my $self = $CLIENT{self_signed_tls_client_auth};
    my $req = sub {
        my ($id, $cert, %o) = @_;
        return { %{ $o{exchange} ? { path => '/token' } : \%intro },
            form => [($o{exchange} ? %exchange_form : (token => $subject)), client_id => $id],
            ($cert ? (cert => $cert->{cert}, key => $cert->{key}) : ()) };
    };
    my @r = oidc_request(
        $req->($tls, $op->{tls_client}),
        $req->($tls, $op->{tls_client}, exchange => 1),
        $req->($tls, $op->{other_tls_client}),
        $req->($tls, undef),
        $req->($tls, $op->{self_signed_client}),
        $req->($self, $op->{self_signed_client}),
        $req->($self, $op->{self_signed_client}, exchange => 1),
        $req->($self, $op->{unknown_self_signed}),
        $req->($self, $op->{tls_client}),
    );
    is_deeply([map { outcome($_) } @r], [
        '200 active', '200 issued', ('401 invalid_client') x 3,
        '200 active', '200 issued', ('401 invalid_client') x 2,
    ], 'what the provider answered') or diag(join "\n", map { "$_->{status} $_->{body}" } @r);
    is_deeply([map { $_->{error_detail} // '-' } $op->log], [
        '-', '-',
        'certificate subject value does not match the registered one',
        'client certificate was not provided',
        'client certificate was not verified',
        '-', '-',
        ('unregistered client certificate provided') x 2,
    ], 'why');
};

subtest 'provider: client secrets' => sub {
    $op->log_clear;
    my $id = $CLIENT{client_secret_basic};
    my $secret = secret_of($id);
    my @r = oidc_request(
        { %intro, form => [token => $subject], headers => [[authorization => 'Basic ' . MIME::Base64::encode_base64("$id:$secret", '')]] },
        { %intro, form => [token => $subject], basic => [$id, $secret] },
        { %intro, form => [token => $subject, client_id => $id, client_secret => $secret] },
    );
    is_deeply([map { outcome($_) } @r], ['400 invalid_request', '200 active', '200 active'],
        'Basic credentials must be form-urlencoded (RFC 6749 2.3.1); a client_secret_basic client may also post')
        or diag(join "\n", map { "$_->{status} $_->{body}" } @r);
    is($r[0]{json}{error_description}, 'client_id and client_secret in the authorization header are not properly encoded',
        'the unencoded secret\'s answer');
};

# ---- 3. through nginx: client assertions and mutual TLS --------------------------------
# The client-authentication directives (client_auth values, client_key_file,
# client_key_id, client_assertion_alg, client_assertion_audience). oidc-provider accepts
# as aud the issuer, its token endpoint URL, or the URL of the endpoint called,
# those two built from the Host header it gets.

my %PENDING = (
    'private_key_jwt RS256' => { method => 'private_key_jwt', alg => 'RS256',
        directives => ['auth_oauth2_token_client_auth private_key_jwt;',
            "auth_oauth2_token_client_key_file $op->{keys}{rsa}{private};",
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'private_key_jwt ES256' => { method => 'private_key_jwt', alg => 'ES256',
        directives => ['auth_oauth2_token_client_auth private_key_jwt;',
            "auth_oauth2_token_client_key_file $op->{keys}{ec}{private};",
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'private_key_jwt EdDSA' => { method => 'private_key_jwt', alg => qr/^(?:EdDSA|Ed25519)$/,
        directives => ['auth_oauth2_token_client_auth private_key_jwt;',
            "auth_oauth2_token_client_key_file $op->{keys}{ed25519}{private};",
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'private_key_jwt PS256 with a kid' => { method => 'private_key_jwt', alg => 'PS256', kid => $op->{keys}{rsa}{kid},
        directives => ['auth_oauth2_token_client_auth private_key_jwt;',
            "auth_oauth2_token_client_key_file $op->{keys}{rsa}{private};",
            'auth_oauth2_token_client_assertion_alg PS256;',
            "auth_oauth2_token_client_key_id $op->{keys}{rsa}{kid};",
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'private_key_jwt RS256 with exchange' => { method => 'private_key_jwt', alg => 'RS256', exchange => 1,
        directives => ['auth_oauth2_token_client_auth private_key_jwt;',
            "auth_oauth2_token_client_key_file $op->{keys}{rsa}{private};",
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'private_key_jwt, a key the provider does not know' => { method => 'private_key_jwt', refused => 1,
        directives => ['auth_oauth2_token_client_auth private_key_jwt;',
            "auth_oauth2_token_client_key_file $op->{unregistered_key};",
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'client_secret_jwt HS256' => { method => 'client_secret_jwt', alg => 'HS256', secret => 1,
        directives => ['auth_oauth2_token_client_auth client_secret_jwt;',
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'client_secret_jwt HS256 with exchange' => { method => 'client_secret_jwt', alg => 'HS256', secret => 1, exchange => 1,
        directives => ['auth_oauth2_token_client_auth client_secret_jwt;',
            "auth_oauth2_token_client_assertion_audience $ISSUER;"] },
    'tls_client_auth, client_id alone' => { method => 'tls_client_auth', cert => $op->{tls_client},
        directives => ['auth_oauth2_token_client_auth tls_client_auth;'] },
    'self_signed_tls_client_auth, client_id alone' => { method => 'self_signed_tls_client_auth',
        cert => $op->{self_signed_client}, directives => ['auth_oauth2_token_client_auth self_signed_tls_client_auth;'] },
);
for my $name (sort keys %PENDING) {
    pending_block($name, $PENDING{$name});
}

sub pending_block {
    my ($name, $p) = @_;
    my $id = $CLIENT{ $p->{method} };
    my $assertion = $p->{method} =~ /_jwt$/;
    my $config = gateway(client => $id, no_secret => !$p->{secret}, directives => $p->{directives},
        cert => $p->{cert}, exchange => $p->{exchange});
    my @tokens = oidc_tokens(2);
    with_nginx("$name ($id) through nginx", $config, sub {
        if ($p->{refused}) {
            status_is(api($tokens[0]), 502, 'the provider refusing the assertion is 502');
            like(error_log_text(), qr/client credentials rejected/, 'error.log: "client credentials rejected"');
            my ($call) = $op->log;
            is($call->{error}, 'invalid_client', 'the provider said invalid_client');
            return;
        }
        for my $t (@tokens) {
            status_is(api($t), 200, 'an active token passes');
            is(last_backend_header('X-Token-Sub'), $SUB, 'with its sub');
        }
        my @calls = $op->log;
        my $per_request = $p->{exchange} ? 2 : 1;
        is(scalar @calls, 2 * $per_request, 'one provider call per IdP request (no cache here)');
        is_deeply([map { $_->{route} } @calls], [($p->{exchange} ? qw(introspection token) : 'introspection') x 2],
            'to the expected endpoints');
        for my $c (@calls) {
            is($c->{client_id}, $id, "call $c->{seq}: as $id");
            is($c->{auth_method}, $p->{method}, "call $c->{seq}: by $p->{method}");
            ok($c->{client_authenticated} && $c->{status} == 200, "call $c->{seq}: accepted");
            ok(!$c->{has_client_secret}, "call $c->{seq}: no client_secret parameter at all");
            ok(!$c->{authorization_scheme}, "call $c->{seq}: no Authorization header");
        }
        if ($assertion) {
            my @jti = map { $_->{jti} } @calls;
            ok(!grep({ !defined } @jti), 'every call carried a client assertion with a jti');
            my %distinct = map { $_ => 1 } grep { defined } @jti;
            is(scalar keys %distinct, scalar @calls, scalar(@calls) . ' calls, ' . scalar(@calls) . ' distinct jti');
            ok(!grep({ $_->{assertion_replayed} } @calls), 'no replayed assertion');
            for my $c (@calls) {
                my $a = $c->{assertion} // {};
                is($c->{client_assertion_type}, $CAT, "call $c->{seq}: client_assertion_type jwt-bearer");
                is($a->{iss}, $id, "call $c->{seq}: iss = client_id");
                is($a->{sub}, $id, "call $c->{seq}: sub = client_id");
                is($a->{aud}, $ISSUER, "call $c->{seq}: aud = the issuer");
                ref $p->{alg} ? like($a->{alg}, $p->{alg}, "call $c->{seq}: alg")
                    : is($a->{alg}, $p->{alg}, "call $c->{seq}: alg $p->{alg}");
                ok(defined $a->{exp} && $a->{exp} > time && $a->{exp} <= time + 300,
                    "call $c->{seq}: exp within the next 5 minutes");
                is($a->{kid}, $p->{kid}, "call $c->{seq}: kid $p->{kid}") if $p->{kid};
            }
        } else {
            ok($_->{tls_client_cert}, "call $_->{seq}: with the client certificate") for @calls;
        }
    });
}

done_testing();
