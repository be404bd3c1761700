# auth_oauth2_token_phantom: introspection asks for a JWT, which replaces the
# client's opaque token on the way upstream. Every accepted answer form, the
# inactive ones (never forwarded), malformed ones (502), 64 KiB JWTs, the
# cache. Configuration mistakes are in t/031-config-policy.t.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64url);

my $JSON = JSON::PP->new->canonical;

# A compact JWS with a fixed, fake signature: the module checks the shape,
# the upstream would check the signature.
sub jwt {
    my ($claims, $header) = @_;
    $header //= { alg => 'RS256', typ => 'at+jwt' };
    return join '.', encode_base64url($JSON->encode($header)),
        encode_base64url($JSON->encode($claims)), encode_base64url('test-signature');
}

# A JWT of exactly $size bytes.
sub jwt_of_size {
    my ($size) = @_;
    my $pad = 0;
    my $token;
    $token = jwt({ sub => 'big', scope => 'read', pad => 'x' x ++$pad }) while !$token || length($token) < $size;
    die "no JWT of $size bytes\n" unless length($token) == $size;
    return $token;
}

my $ACCEPT = 'application/token-introspection+jwt, application/jwt;q=0.9, application/json;q=0.1';

my $http = <<'CONF';
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_client_secret s3cret;
auth_oauth2_token_claim_set $jwt_roles realm_access.roles;
CONF

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_phantom on;
    auth_oauth2_token_require_scope read;
    proxy_set_header X-Sub $oauth2_token_sub;
    proxy_pass http://backend;
}
location /small-buffer/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_phantom on;
    auth_oauth2_token_introspect_endpoint /_introspect_small;
    proxy_pass http://backend;
}
location /phantom-claims/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_phantom on;
    proxy_set_header X-Roles $jwt_roles;
    proxy_pass http://backend;
}
location /phantom-redirect/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_phantom on;
    try_files /nonexistent @phantom_again;
}
location @phantom_again {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_phantom on;
    proxy_pass http://backend;
}
location /plain/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    subrequest_output_buffer_size 160k;
    proxy_pass http://idp/introspect;
}
location = /_introspect_small { internal; proxy_pass http://idp/introspect; }
CONF

my $cached_http = "$http\nauth_oauth2_token_introspect_cache zone=tokens:1m;\n";

sub get {
    my ($uri, $token) = @_;
    return http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
}

sub last_backend_header {
    my ($name) = @_;
    my $reqs = backend_requests();
    return () unless @$reqs;
    return map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $reqs->[-1]{headers} };
}

sub idp_header {
    my ($req, $name) = @_;
    return join ',', map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $req->{headers} };
}

start_servers();
start_nginx(block_from(name => 'phantom', http_config => $http, config => $config))
    or BAIL_OUT('nginx did not start');

# --- the three accepted answer forms

my $raw = jwt({ sub => 'alice', scope => 'read write', exp => 4102444800 });
idp_setup({ opaque1 => { body => $raw, content_type => 'application/jwt' } });
my $res = get('/', 'opaque1');
is($res->{status}, 200, 'application/jwt: allowed');
is_deeply([last_backend_header('Authorization')], ["Bearer $raw"],
    'application/jwt: the upstream gets the JWT, once, in place of the opaque token');
is_deeply([last_backend_header('X-Sub')], ['alice'], 'application/jwt: claims come from the JWT payload');
my $idp = idp_requests();
is(scalar @$idp, 1, 'application/jwt: one introspection call');
is(idp_header($idp->[0], 'Accept'), $ACCEPT, 'the IdP is asked for a JWT first, JSON last');
is($idp->[0]{body}, 'token=opaque1&token_type_hint=access_token', 'the introspection body carries the opaque token');
is(idp_header($idp->[0], 'Authorization'), 'Basic Z3c6czNjcmV0', 'the gateway authenticates as its client');

my $keycloak = jwt({ sub => 'bob', scope => 'read' });
idp_setup({ opaque2 => { json => { active => JSON::PP::true, sub => 'json-sub', jwt => $keycloak } } });
$res = get('/', 'opaque2');
is($res->{status}, 200, '{"jwt": ...} JSON: allowed');
is_deeply([last_backend_header('Authorization')], ["Bearer $keycloak"], '{"jwt": ...} JSON: the upstream gets the jwt member');
is_deeply([last_backend_header('X-Sub')], ['bob'], '{"jwt": ...} JSON: claims come from the JWT, not the JSON around it');

my $rfc9701 = jwt({ iss => 'idp', aud => 'gw', token_introspection => { active => JSON::PP::true, sub => 'carol', scope => 'read' } },
    { alg => 'ES256', typ => 'token-introspection+jwt' });
idp_setup({ opaque3 => { body => $rfc9701, content_type => 'application/token-introspection+jwt' } });
$res = get('/', 'opaque3');
is($res->{status}, 200, 'RFC 9701 answer: allowed');
is_deeply([last_backend_header('Authorization')], ["Bearer $rfc9701"], 'RFC 9701 answer: the upstream gets the signed answer');
is_deeply([last_backend_header('X-Sub')], ['carol'], 'RFC 9701 answer: claims come from token_introspection');

# --- claim_set reads the JWT's claims

my $with_roles = jwt({ sub => 'frank', realm_access => { roles => ['reader', 'writer'] } });
idp_setup({ roles => { body => $with_roles, content_type => 'application/jwt' } });
$res = get('/phantom-claims/', 'roles');
is($res->{status}, 200, 'claim_set with phantom: allowed');
is_deeply([last_backend_header('X-Roles')], ['reader,writer'], 'claim_set with phantom: a nested claim of the JWT');

# --- after an internal redirect the check runs again with the opaque token

idp_setup({ opaque5 => { body => $raw, content_type => 'application/jwt' } });
$res = get('/phantom-redirect/', 'opaque5');
is($res->{status}, 200, 'phantom after try_files: allowed');
is_deeply([map { $_->{body} } @{ idp_requests() }],
    ['token=opaque5&token_type_hint=access_token', 'token=opaque5&token_type_hint=access_token'],
    'phantom after try_files: both passes introspect the client token, never the JWT');
is_deeply([last_backend_header('Authorization')], ["Bearer $raw"], 'phantom after try_files: the upstream gets the JWT once');

# --- inactive answers are 401 and never reach the upstream

idp_setup({
    json_inactive => { json => { active => JSON::PP::false } },
    jwt_inactive => { body => jwt({ token_introspection => { active => JSON::PP::false } }),
        content_type => 'application/token-introspection+jwt' },
    no_content => { status => 204, body => '', content_type => undef },
});
for my $token (qw(json_inactive jwt_inactive no_content)) {
    $res = get('/', $token);
    is($res->{status}, 401, "$token: 401");
    like(join(',', map { $_->[1] } grep { lc $_->[0] eq 'www-authenticate' } @{ $res->{headers} }),
        qr/error="invalid_token"/, "$token: invalid_token challenge");
}
is(scalar @{ backend_requests() }, 0, 'inactive answers: nothing reached the backend');

# --- answers that carry no usable JWT are 502 and logged

my %bad = (
    not_a_jwt => [{ body => 'opaque-looking-thing', content_type => 'application/jwt' }, 'JWT is malformed: not three dot-separated parts'],
    unsigned => [{ body => jwt({ sub => 'x' }, { alg => 'none' }), content_type => 'application/jwt' }, 'JWT is malformed: header is not a JSON object'],
    no_jwt => [{ json => { active => JSON::PP::true, sub => 'x' } }, 'carries no JWT for the phantom token'],
    no_claim => [{ body => jwt({ sub => 'x' }), content_type => 'application/token-introspection+jwt' }, 'no "token_introspection" object'],
    html => [{ body => '<html>hi</html>', content_type => 'text/html' }, 'not a JSON object'],
);
idp_setup({ map { $_ => $bad{$_}[0] } keys %bad });
for my $token (sort keys %bad) {
    is(get('/', $token)->{status}, 502, "$token: 502");
}
my $log = error_log_text();
for my $token (sort keys %bad) {
    like($log, qr/\Q$bad{$token}[1]\E/, "$token: the log says why");
}
is(scalar @{ backend_requests() }, 0, 'unusable answers: nothing reached the backend');
my $ours = join '', grep { /auth_oauth2_token/ } split /^/, $log;
unlike($ours, qr/opaque-looking-thing|dGVzdC1zaWduYXR1cmU/, 'the module logs neither tokens nor JWTs');

# --- policy applies to the JWT's claims

idp_setup({ noscope => { body => jwt({ sub => 'dave', scope => 'write' }), content_type => 'application/jwt' } });
is(get('/', 'noscope')->{status}, 403, 'require_scope checks the scope claim of the JWT');

# --- size: 64 KiB JWTs pass (whatever subrequest_output_buffer_size says), larger ones are 502

my $big = jwt_of_size(65536);
idp_setup({ big => { json => { active => JSON::PP::true, jwt => $big } }, small => { body => jwt({ sub => 's', scope => 'read' }), content_type => 'application/jwt' } });
$res = get('/', 'big');
is($res->{status}, 200, 'a 65536-byte JWT in a JSON answer: allowed');
is_deeply([last_backend_header('Authorization')], ["Bearer $big"], 'a 65536-byte JWT reaches the upstream intact');
$res = get('/small-buffer/', 'big');
is($res->{status}, 200, 'the same answer through an internal location with the default subrequest_output_buffer_size: allowed');
is_deeply([last_backend_header('Authorization')], ["Bearer $big"], 'phantom answers get a buffer of their own: the JWT is intact');
is(get('/small-buffer/', 'small')->{status}, 200, 'a small JWT through the same location: allowed');

my $too_big = jwt_of_size(65537);
idp_setup({ too_big => { body => $too_big, content_type => 'application/jwt' } });
is(get('/', 'too_big')->{status}, 502, 'a 65537-byte JWT: 502');
like(error_log_text(), qr/JWT of 65537 bytes exceeds the 65536-byte limit/, 'the log gives the size');
stop_nginx();

# --- cache: the JWT is in the entry; phantom and plain answers never share one

start_nginx(block_from(name => 'phantom cache', http_config => $cached_http, config => $config))
    or BAIL_OUT('nginx did not start');
my $cached = jwt({ sub => 'erin', scope => 'read', exp => 4102444800 });
idp_setup({
    'opaque4' => { body => $cached, content_type => 'application/jwt' },
});
for my $i (1 .. 3) {
    $res = get('/', 'opaque4');
    is($res->{status}, 200, "cached phantom, request $i: allowed");
    is_deeply([last_backend_header('Authorization')], ["Bearer $cached"], "cached phantom, request $i: the upstream gets the JWT");
}
is(scalar @{ idp_requests() }, 1, 'cached phantom: one IdP call for three requests');

idp_setup({ opaque4 => { json => { active => JSON::PP::true, sub => 'erin' } } });
$res = get('/plain/', 'opaque4');
is($res->{status}, 200, 'a plain location with the same token and zone: allowed');
is(scalar @{ idp_requests() }, 1, 'the plain location asked the IdP itself (no shared entry)');
is_deeply([last_backend_header('Authorization')], ['Bearer opaque4'], 'the plain location forwards the client token');
stop_nginx();

done_testing();
