# JWT access tokens checked with the issuer's JWK Set fetched through an
# internal location (auth_oauth2_token_jwt_keys_request), from npm
# oidc-provider (t/oidc/): fetched once per gateway, not per worker; a key
# rotation costs one fetch; a flood of unknown kids costs at most one fetch
# per interval; the set survives a reload; with the endpoint down, the keys
# in hand work until the staleness bound, then 503; a garbage answer leaves
# the keys in hand. Two issuers on one location: one checked here only, one
# checked here and then introspected (IdP calls counted per mode).
#
# Needs node (20+), openssl and npm, like t/171.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use OIDCProvider qw(:DEFAULT decode_jwt b64url);
use OAuth2Test;
use Time::HiRes qw(time sleep);

require_oidc_provider();
start_servers();
my $RESOURCE = 'https://orders.example';
my $signing = OAuth2Test::prefix() . "/provider-signing-keys.json";
unlink $signing;
my $op = start_oidc_provider(jwt_resource => $RESOURCE, signing_keys_file => $signing);
my $issuer = $op->{issuer};

sub proxy_to_provider {
    my ($path) = @_;
    return <<"LOC";
    internal;
    log_subrequest on;
    proxy_pass $issuer$path;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $op->{ca};
    proxy_ssl_name localhost;
LOC
}

my $jwks_loc = proxy_to_provider('/jwks');
my $config = <<"CONF";
auth_oauth2_token_jwt_keys_cache zone=jwks:1m unknown_kid_interval=3s;
auth_oauth2_token_jwt_algorithms ES256;
location = /_jwks {
$jwks_loc    access_log logs/jwks.log;
}
location = /_jwks_short {
$jwks_loc    access_log logs/jwks_short.log;
}
location = /_jwks_garbage {
    internal;
    log_subrequest on;
    access_log logs/jwks_garbage.log;
    proxy_pass http://backend/garbage;
}
location = /metrics { auth_oauth2_token_metrics; }
location /api/ {
    access_log logs/api.log pids;
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer $issuer keys_request=/_jwks;
    auth_oauth2_token_require_audience $RESOURCE;
    proxy_pass http://backend;
}
location /short/ {
    auth_oauth2_token_jwt_keys_cache zone=jwks_short:1m min_age=1s max_age=2s default_age=2s stale=3s;
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer $issuer keys_request=/_jwks_short;
    auth_oauth2_token_require_audience $RESOURCE;
    proxy_pass http://backend;
}
location /garbage-keys/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer $issuer keys_request=/_jwks_garbage;
    auth_oauth2_token_require_audience $RESOURCE;
    proxy_pass http://backend;
}
CONF

sub get {
    my ($uri, $token) = @_;
    my $r = http_request({ method => 'GET', uri => $uri, headers => ["Authorization: Bearer $token"] });
    my %h = map { (lc $_->[0] => $_->[1]) } @{ $r->{headers} };
    $r->{h} = \%h;
    return $r;
}

# Fetches of one internal location, from its access log (subrequests logged).
sub fetches {
    my ($log) = @_;
    my $text = OAuth2Test::slurp(OAuth2Test::prefix() . "/logs/$log") // '';
    return scalar(() = $text =~ /\n/g);
}

# A JWS with the provider's issuer and audience, a kid nobody has, and a
# signature no key made: refused before any signature check.
sub unknown_kid_token {
    my $header = b64url(qq({"alg":"ES256","typ":"at+jwt","kid":"flood-) . int(rand(1e9)) . qq("}));
    my $now = int(time);
    my $claims = b64url(qq({"iss":"$issuer","aud":"$RESOURCE","exp":) . ($now + 300) . qq(,"iat":$now,"sub":"x"}));
    return "$header.$claims." . b64url(join '', map { chr int rand 256 } 1 .. 64);
}

idp_setup({});
start_nginx(block_from(name => 'jwks-fetch', config => $config, workers => 2,
    http_config => q(log_format pids '$pid';))) or BAIL_OUT('nginx');

my $jwt = $op->token(resource => $RESOURCE);
my ($header) = decode_jwt($jwt);
is($header->{kid}, 'test-signing', 'the provider signs with its first key');
is(fetches('jwks.log'), 0, 'no fetch before a token needs the keys');

# New connections until both workers have served the token.
my (%status, %workers);
for (1 .. 200) {
    $status{ get('/api/orders', $jwt)->{status} }++;
    %workers = map { $_ => 1 } grep { /\d/ } split /\n/, OAuth2Test::slurp(OAuth2Test::prefix() . '/logs/api.log') // '';
    last if keys %workers == 2;
}
is(scalar(keys %workers), 2, 'both workers served the token');
is_deeply([keys %status], [200], 'the token passes');
is(fetches('jwks.log'), 1, 'the JWK Set was fetched once for the gateway, not once per worker');
like(error_log_text(), qr{JWK Set fetched from "/_jwks": 1 keys}, 'the fetch is logged with its key count');

# Rotation: the provider restarts with a new signing key first in its set.
$op = $op->restart(new_signing_kid => 'rotated');
my $rotated = $op->token(resource => $RESOURCE);
is((decode_jwt($rotated))[0]{kid}, 'rotated', 'the provider now signs with the new key');
# The last fetch may be within unknown_kid_interval (3 s): until it has
# passed, the new kid is unknown; then one fetch brings it.
my $deadline = time + 15;
my $r;
while (time < $deadline) {
    $r = get('/api/orders', $rotated);
    last if $r->{status} == 200;
    is($r->{status}, 401, 'before the interval has passed, an unknown kid is refused') if $r->{status} != 401;
    sleep 0.2;
}
is($r->{status}, 200, 'a token signed with the new key passes after the set is fetched again');
is(fetches('jwks.log'), 2, 'one more fetch for the rotation');
is(get('/api/orders', $jwt)->{status}, 200, 'a token of the old key still passes (it is still in the set)');

# A flood of tokens with random kids: at most one fetch per interval.
my $started = time;
my @flood = map { get('/api/orders', unknown_kid_token()) } 1 .. 40;
my $elapsed = time - $started;
is(scalar(grep { $_->{status} == 401 } @flood), 40, 'every token with an unknown kid is refused');
like($flood[-1]{h}{"www-authenticate"} // '', qr/no key is known for the token/, 'saying no key is known');
my $allowed = 1 + int($elapsed / 3);
cmp_ok(fetches('jwks.log') - 2, '<=', $allowed,
    sprintf('40 unknown kids in %.1f s cost at most %d fetch(es) (one per 3 s interval)', $elapsed, $allowed));

# A reload keeps the set: the new workers read it from the zone.
my $before = fetches('jwks.log');
ok(reload_nginx(), 'reloaded');
is(get('/api/orders', $rotated)->{status}, 200, 'after the reload the token passes');
is(fetches('jwks.log'), $before, 'with no fetch: the set survived the reload');

# A garbage answer is a failed fetch: no keys, 503 (never 401: the token may be fine).
$r = get('/garbage-keys/x', $jwt);
is($r->{status}, 503, 'an endpoint that serves no JWK Set: 503');
like(error_log_text(), qr{JWK Set refused: .*"/_jwks_garbage"}, 'the refused set is logged');

# The endpoint down: the keys in hand work until the staleness bound.
is(get('/short/x', $jwt)->{status}, 200, 'the short-lived set is fetched');
my $short_fetched = time;
$op->stop;
$r = get('/short/x', $jwt);
is($r->{status}, 200, 'with the endpoint down, the keys in hand still verify');
# Fresh for 2 s, then stale for 3 s: 503 from 5 s after the fetch.
$deadline = time + 20;
while (time < $deadline) {
    $r = get('/short/x', $jwt);
    last if $r->{status} != 200;
    sleep 0.2;
}
is($r->{status}, 503, 'past the staleness bound: 503');
cmp_ok(time - $short_fetched, '>=', 4.5, 'not before the bound (2 s fresh + 3 s stale)');
like(error_log_text(), qr{JWK Set endpoint .*"/_jwks_short"\); the keys in hand stay}, 'the failed fetches are logged');
is(get('/api/orders', $jwt)->{status}, 200, 'the other set, still fresh, is not affected');

# The metrics: fetches by result, the sets' key counts and fetch times.
my $metrics = http_request({ method => 'GET', uri => '/metrics' })->{body};
my ($fetched) = $metrics =~ /^oauth2_token_jwks_fetches_total\{result="fetched"\} (\d+)$/m;
is($fetched, fetches('jwks.log') + 1, 'every fetch that brought a set is counted (the short one too)');
like($metrics, qr/^oauth2_token_jwks_fetches_total\{result="refused"\} [1-9]/m, 'the garbage answers are counted as refused');
like($metrics, qr/^oauth2_token_jwks_fetches_total\{result="failed"\} [1-9]/m, 'the fetches of a down endpoint as failed');
like($metrics, qr/^oauth2_token_jwks_keys\{issuer="\Q$issuer\E"\} 2$/m, 'the set holds the old and the new key');
my ($at) = $metrics =~ /^oauth2_token_jwks_fetched_timestamp_seconds\{issuer="\Q$issuer\E"\} (\d+)$/m;
cmp_ok(abs(($at // 0) - time), '<', 120, 'and was fetched moments ago');
like($metrics, qr/^oauth2_token_jwt_checks_total\{result="keys_unavailable"\} [1-9]/m, 'the 503s are counted');
stop_nginx();

done_testing();
