# Subrequests never pass unchecked: nginx skips the ACCESS phase for them, so
# a protected location reached by auth_request or mirror is checked in
# PREACCESS instead. The module's own IdP subrequests are not checked, even
# where the internal location inherits the check.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use Time::HiRes qw(sleep time);

start_servers();

my $config = <<'CONF';
# auth_request pointing at a location this module protects.
location /app/ {
    auth_request /check;
    proxy_pass http://backend;
}
location = /check {
    internal;
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_scope app;
    # `return` would answer in the rewrite phase, before any access check.
    try_files /nonexistent =204;
}
# mirror to a protected location: the copy must not reach its backend unchecked.
location /mirrored/ {
    mirror /_mirror;
    proxy_pass http://backend;
}
location = /_mirror {
    internal;
    auth_oauth2_token_introspect on;
    proxy_pass http://backend/copy$request_uri;
}
# auth_request to a location that exchanges the token and withholds a
# cookie carrier: the subrequest's changes stay in the subrequest (the main
# request goes upstream after it, with the client's headers).
location /app-x/ {
    auth_request /check-x;
    proxy_pass http://backend;
}
location = /check-x {
    internal;
    auth_oauth2_token_source bearer cookie=at;
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    try_files /nonexistent =204;
}
location = /_token { internal; proxy_pass http://idp/token; }
CONF

my $http = <<'CONF';
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
CONF

# The internal IdP location inherits "introspect on" from the server: the
# module's own subrequest to it must not be checked (it would recurse).
my $server_level = <<'CONF';
auth_oauth2_token_introspect off;
location = /_introspect {
    auth_oauth2_token_introspect on;
    internal;
    proxy_pass http://idp/introspect;
}
CONF

sub get {
    my ($uri, @headers) = @_;
    return http_request(raw_request('GET', $uri, [@headers]));
}

sub header {
    my ($r, $name) = @_;
    my ($v) = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $r->{headers} };
    return $v // '';
}

sub backend_paths { [map { $_->{path} } @{ backend_requests() }] }

# Waits (bounded) until the IdP has had $n calls.
sub wait_for_idp_calls {
    my ($n) = @_;
    my $deadline = time + 5;
    sleep 0.02 while @{ idp_requests() } < $n && time < $deadline;
    return scalar @{ idp_requests() };
}

start_nginx(block_from(name => 'subrequests', http_config => $http,
    config => $config . $server_level)) or BAIL_OUT('nginx');

# auth_request
idp_setup({ good => { json => { active => \1, scope => 'app' } }, narrow => { json => { active => \1, scope => 'other' } } });
my $r = get('/app/x');
is($r->{status}, 401, 'auth_request: no token is 401');
is(header($r, 'WWW-Authenticate'), 'Bearer realm="api"', 'auth_request: with the challenge of the protected location');
is(scalar @{ idp_requests() }, 0, 'auth_request: the IdP was not asked');

$r = get('/app/x', 'Authorization: Bearer bad');
is($r->{status}, 401, 'auth_request: an inactive token is 401');
like(header($r, 'WWW-Authenticate'), qr/error="invalid_token"/, 'auth_request: invalid_token');

$r = get('/app/x', 'Authorization: Bearer narrow');
is($r->{status}, 403, 'auth_request: a token without the scope is 403');

$r = get('/app/x', 'Authorization: Bearer good');
is($r->{status}, 200, 'auth_request: an active token passes');
is_deeply(backend_paths(), ['/app/x'], 'auth_request: only the allowed request reached the backend');
is(scalar @{ idp_requests() }, 3, 'auth_request: one IdP call per checked request (bad, narrow, good)');
my ($last) = reverse @{ idp_requests() };
is($last->{body}, 'token=good&token_type_hint=access_token', 'auth_request: the IdP got the token');
ok(!grep({ lc $_->[0] eq 'cookie' || lc $_->[0] eq 'x-forwarded-for' } @{ $last->{headers} }),
    "auth_request: none of the client's headers reached the IdP");

# mirror
idp_setup({ good => { json => { active => \1 } } });
$r = get('/mirrored/a', 'Authorization: Bearer bad');
is($r->{status}, 200, 'mirror: the main request is not protected');
is(wait_for_idp_calls(1), 1, 'mirror: the mirrored copy was checked (one IdP call)');
$r = get('/mirrored/b');
is($r->{status}, 200, 'mirror: a request without a token passes the unprotected main location');
# The check of the mirrored copy with no token refuses it at once; by the
# time its IdP-checked sibling with a good token arrives, both are done.
$r = get('/mirrored/c', 'Authorization: Bearer good');
is(wait_for_idp_calls(2), 2, 'mirror: the good token was checked');
my $deadline = time + 5;
sleep 0.02 while !grep({ $_ eq '/copy/mirrored/c' } @{ backend_paths() }) && time < $deadline;
my @copies = grep { m{^/copy/} } @{ backend_paths() };
is_deeply(\@copies, ['/copy/mirrored/c'], 'mirror: only the copy with an active token reached the mirror backend');
like(error_log_text(), qr/token is not active/, 'mirror: the inactive copy was refused');

# A subrequest that exchanges the token does not change the main request's headers.
idp_setup({ good => { json => { access_token => 'narrow', issued_token_type => 'urn:ietf:params:oauth:token-type:access_token' } } });
$r = get('/app-x/a', 'Authorization: Bearer good', 'Cookie: at=other; c=1');
is($r->{status}, 200, 'subrequest exchange: the main request passes');
is(scalar @{ idp_requests() }, 1, 'subrequest exchange: one token-endpoint call');
my ($main) = @{ backend_requests() };
is_deeply([map { "$_->[0]: $_->[1]" } grep { $_->[0] =~ /^(authorization|cookie)$/i } @{ $main->{headers} }],
    ['Authorization: Bearer good', 'Cookie: at=other; c=1'],
    "subrequest exchange: the main request keeps the client's Authorization and Cookie");

# The module's own IdP subrequest, to a location that inherits the check, is not checked.
idp_setup({ good => { json => { active => \1, scope => 'app' } } });
$r = get('/app/y', 'Authorization: Bearer good');
is($r->{status}, 200, 'own subrequest: the IdP call to a location with the check is not checked itself');
is(scalar @{ idp_requests() }, 1, 'own subrequest: one IdP call');

stop_nginx();
done_testing();
