# Revocation pushed by the IdP: a Shared Signals transmitter
# (t/oidc/ssf-transmitter.mjs, npm `jose`) signs Security Event Tokens with
# a key it publishes as a JWK Set, and pushes them (RFC 8935) to the
# gateway's receiver. After a CAEP session-revoked for one session of
# alice (a complex subject), that session's tokens are refused and her
# other session's still pass; after a RISC account-disabled for alice
# (iss_sub), all her tokens are refused — introspected, cache hits, and
# JWTs verified at the gateway — while bob's pass, and a token alice got
# after the event passes. Every refused delivery gets its RFC 8935 error
# (a 400 with `err` and `description`) and changes nothing; a reload keeps
# the list; nginx -t names the configuration mistakes.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use JSON::PP;

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;

# Signs each spec with the key in $keyfile (made on first use), writing its
# public JWK Set to $jwksfile.
sub signed {
    my ($keyfile, $jwksfile, @specs) = @_;
    return SsfTest::signed("$dir/$keyfile", "$dir/$jwksfile", @specs);
}

my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
my $SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
my $ACCOUNT_DISABLED = 'https://schemas.openid.net/secevent/risc/event-type/account-disabled';
my $jti = 0;
sub set_claims {
    my (%over) = @_;
    my %c = (iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => 'set-' . ++$jti,
        events => { $SESSION_REVOKED => {} });
    @c{ keys %over } = values %over;
    delete $c{$_} for grep { !defined $c{$_} } keys %c;
    return \%c;
}
sub iss_sub { { format => 'iss_sub', iss => $ISS, sub => $_[0] } }

# The transmitter's key set, and JWT access tokens (signed by an issuer key
# of their own) for the location that verifies them here.
signed('transmitter.jwk', 'transmitter.jwks');
sub jwt {
    my (%claims) = @_;
    my ($t) = signed('issuer.jwk', 'issuer.jwks', { header => { typ => 'at+jwt' }, claims => {
        iss => $ISS, aud => 'api', exp => $NOW + 600, scope => 'read', %claims } });
    return $t;
}
my %jwt = (
    alice_s1 => jwt(sub => 'alice', sid => 's1', iat => $NOW - 20),
    alice_s2 => jwt(sub => 'alice', sid => 's2', iat => $NOW - 20),
    bob      => jwt(sub => 'bob', sid => 's1b', iat => $NOW - 20),
    alice_new => jwt(sub => 'alice', sid => 's3', iat => $NOW - 5),
);
open my $bfh, '>', "$dir/bearer" or die $!;
print $bfh "transmitter-secret-0123456789\n";
close $bfh;
chmod 0600, "$dir/bearer";

# Opaque tokens the test IdP introspects: alice's two sessions (one answer
# without `iss`), bob, dave, and alice after the events.
my %idp = (
    'tok-alice-s1' => { json => { active => \1, sub => 'alice', sid => 's1', iss => $ISS, iat => $NOW - 20 } },
    'tok-alice-s2' => { json => { active => \1, sub => 'alice', sid => 's2', iat => $NOW - 20 } },
    'tok-bob'      => { json => { active => \1, sub => 'bob', iss => $ISS, iat => $NOW - 20 } },
    'tok-dave'     => { json => { active => \1, sub => 'dave', iss => $ISS, iat => $NOW - 20 } },
    'tok-alice-new' => { json => { active => \1, sub => 'alice', sid => 's4', iss => $ISS, iat => $NOW - 5 } },
);

# index=off: the revoked tokens' cache entries stay, so that the list is
# seen refusing cache hits (t/227 has the entries dropped).
my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
    . " keys=$dir/transmitter.jwks max_age=2m token_lifetime=1h bearer_file=$dir/bearer index=off;";
my $config = <<CONF;
location = /ssf { auth_oauth2_token_ssf_push; }
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    auth_oauth2_token_introspect_cache zone=intro:1m max_ttl=60s;
    proxy_pass http://backend;
}
location /jwt/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer $ISS;
    auth_oauth2_token_jwt_keys_file $dir/issuer.jwks;
    auth_oauth2_token_require_audience api;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_metrics; }
CONF

idp_setup(\%idp);
start_nginx(block_from(name => 'ssf', config => $config, http_config => $http)) or BAIL_OUT('nginx');

sub get {
    my ($uri, $token) = @_;
    return http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]))->{status};
}
sub push_set {
    my ($body, %o) = @_;
    my @h = ('Content-Type: ' . ($o{type} // 'application/secevent+jwt'));
    push @h, 'Authorization: Bearer ' . ($o{bearer} // 'transmitter-secret-0123456789') unless $o{no_bearer};
    my $r = http_request(raw_request($o{method} // 'POST', '/ssf', \@h, $body));
    my $json = eval { decode_json($r->{body}) };
    return ($r->{status}, $json);
}
sub idp_count { scalar @{ idp_requests() } }

# 1. Before any event: every token passes, the opaque ones now cached.
is(get('/api/', "tok-$_"), 200, "before the events: ${_}'s introspected token passes") for qw(alice-s1 alice-s2 bob dave);
is(get("/jwt/", $jwt{$_}), 200, "before the events: ${_}'s JWT passes") for qw(alice_s1 alice_s2 bob);
my $calls = idp_count();

# 2. A CAEP session-revoked for alice's session s1 (complex subject).
my ($session_set) = signed('transmitter.jwk', 'transmitter.jwks', { claims => set_claims(
    sub_id => { format => 'complex', user => iss_sub('alice'), session => { format => 'opaque', id => 's1' } }) });
my ($status, $body) = push_set($session_set);
is($status, 202, 'session-revoked: accepted (202)') or diag(explain [$status, $body]);
is(get('/api/', 'tok-alice-s1'), 401, 'session-revoked: alice\'s token of session s1 is refused (a cache hit)');
is(get('/jwt/', $jwt{alice_s1}), 401, 'session-revoked: alice\'s JWT of session s1 is refused');
is(get('/api/', 'tok-alice-s2'), 200, 'session-revoked: alice\'s token of session s2 still passes');
is(get('/jwt/', $jwt{alice_s2}), 200, 'session-revoked: alice\'s JWT of session s2 still passes');
is(idp_count(), $calls, 'the introspected tokens were cache hits: no IdP call');

# 3. Refused deliveries: each its RFC 8935 error, none changes the list
# (they are about dave, whose token passes after them all).
my $about_dave = sub { set_claims(sub_id => iss_sub('dave'), events => { $ACCOUNT_DISABLED => {} }, @_) };
my @refusals = (
    ['unsigned (alg none)', { unsigned => 1, claims => $about_dave->() }, 'invalid_request'],
    ['signed by another key', { keyfile => "$dir/other.jwk", claims => $about_dave->() }, 'invalid_key'],
    ['a wrong iss', { claims => $about_dave->(iss => 'https://evil.test') }, 'invalid_issuer'],
    ['a wrong aud', { claims => $about_dave->(aud => 'https://other.test') }, 'invalid_audience'],
    ['too old', { claims => $about_dave->(iat => $NOW - 600) }, 'invalid_request'],
    ['claims not JSON', { raw_payload => 'not json at all' }, 'invalid_request'],
    ['typed JWT', { header => { typ => 'JWT' }, claims => $about_dave->() }, 'invalid_request'],
);
for my $case (@refusals) {
    my ($name, $spec, $err) = @$case;
    my ($set) = signed('transmitter.jwk', 'transmitter.jwks', $spec);
    my ($s, $j) = push_set($set);
    is($s, 400, "$name: 400");
    is($j && $j->{err}, $err, "$name: err $err");
    ok($j && length($j->{description} // ''), "$name: a description");
}
my ($good_dave) = signed('transmitter.jwk', 'transmitter.jwks', { claims => $about_dave->() });
for my $case (
    ['a wrong content type', [$good_dave, type => 'application/json'], 'invalid_request'],
    ['too large', ['a' x 17000], 'invalid_request'],
    ['no bearer secret', [$good_dave, no_bearer => 1], 'authentication_failed'],
    ['a wrong bearer secret', [$good_dave, bearer => 'not-the-secret-0123456789'], 'access_denied'],
    ['a replayed jti', [$session_set], 'invalid_request'],
) {
    my ($name, $args, $err) = @$case;
    my ($s, $j) = push_set(@$args);
    is($s, 400, "$name: 400");
    is($j && $j->{err}, $err, "$name: err $err");
}
is((push_set($good_dave, method => 'GET'))[0], 405, 'GET: 405');
is(get('/api/', 'tok-dave'), 200, 'after the refused deliveries dave\'s token still passes');
is(get('/api/', 'tok-alice-s2'), 200, 'after a replayed session-revoked alice\'s session s2 still passes');

# 4. A RISC account-disabled for alice (iss_sub): all her tokens refused.
my ($account_set) = signed('transmitter.jwk', 'transmitter.jwks', { claims => set_claims(
    events => { $ACCOUNT_DISABLED => { subject => iss_sub('alice') } }) });
is((push_set($account_set))[0], 202, 'account-disabled: accepted (202)');
is(get('/api/', 'tok-alice-s2'), 401, 'account-disabled: alice\'s token without iss is refused');
is(get('/jwt/', $jwt{alice_s2}), 401, 'account-disabled: alice\'s JWT is refused');
is(get('/api/', 'tok-bob'), 200, 'account-disabled: bob\'s token passes');
is(get('/jwt/', $jwt{bob}), 200, 'account-disabled: bob\'s JWT passes');
is(get('/api/', 'tok-alice-new'), 200, 'a token alice got after the event passes');
is(get('/jwt/', $jwt{alice_new}), 200, 'a JWT alice got after the event passes');
like(error_log_text(), qr/SET accepted: event risc_account_disabled, 2 revocations/, 'the event is logged');
unlike(join('', grep { /auth_oauth2_token/ } split /^/m, error_log_text()), qr/alice/,
    'the module\'s log lines never name the subject');

# The metrics: pushes by result, events by type, tokens refused.
{
    my $m = http_request(raw_request('GET', '/metrics', []))->{body};
    my %want = (
        'oauth2_token_ssf_deliveries_total{result="accepted"}' => 2,
        'oauth2_token_ssf_deliveries_total{result="invalid_request"}' => 7,
        'oauth2_token_ssf_deliveries_total{result="invalid_key"}' => 1,
        'oauth2_token_ssf_deliveries_total{result="invalid_issuer"}' => 1,
        'oauth2_token_ssf_deliveries_total{result="invalid_audience"}' => 1,
        'oauth2_token_ssf_deliveries_total{result="authentication_failed"}' => 1,
        'oauth2_token_ssf_deliveries_total{result="access_denied"}' => 1,
        'oauth2_token_ssf_events_total{type="caep_session_revoked"}' => 1,
        'oauth2_token_ssf_events_total{type="risc_account_disabled"}' => 1,
        'oauth2_token_ssf_tokens_refused_total' => 4,
    );
    for my $series (sort keys %want) {
        like($m, qr/^\Q$series\E $want{$series}$/m, "metrics: $series $want{$series}");
    }
}

# 5. A reload keeps the list.
ok(reload_nginx(), 'reload');
is(get('/api/', 'tok-alice-s1'), 401, 'after a reload: alice\'s old token is still refused');
is(get('/jwt/', $jwt{alice_s2}), 401, 'after a reload: alice\'s old JWT is still refused');
is(get('/api/', 'tok-bob'), 200, 'after a reload: bob\'s token passes');

stop_nginx();

# 6. Configuration mistakes fail nginx -t, naming the directive.
for my $case (
    ['no keys', "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD;", 'keys=FILE'],
    ['an unreadable key file', "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD keys=$dir/none.jwks;",
        'cannot read'],
    ['a push location without a receiver', '', 'needs "auth_oauth2_token_ssf_receiver"'],
) {
    my ($name, $http_config, $words) = @$case;
    my $out = OAuth2Test::run_must_die(block_from(name => $name, config => 'location = /ssf { auth_oauth2_token_ssf_push; }',
        http_config => $http_config));
    like($out, qr/\Q$words\E/, "nginx -t: $name");
}

done_testing();
