# A revocation pushed by the IdP drops the revoked tokens' cache entries
# on this gateway, through the receiver's index (index= of
# auth_oauth2_token_ssf_receiver: list key -> tokens, written when a
# token's answer is stored): a jwt_id subject drops that one token's
# entries; an account-disabled drops every entry of the user, in the
# introspection cache and the JWT cache alike, and nobody else's. The
# next request with a dropped token is a miss (an IdP call) and is refused
# by the list. With index=off the entries stay (and are refused on every hit).
# A subject's tokens past one chain's 16 are dropped too (8 chains).
# The gauge oauth2_token_ssf_revocations counts the list's revocations.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;

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
sub set_of {
    my ($event, $subject) = @_;
    my ($set) = signed('transmitter.jwk', 'transmitter.jwks', { claims => { iss => $ISS, aud => $AUD,
        iat => int(time) - 1, jti => 'set-' . ++$jti, events => { $event => { subject => $subject } } } });
    return $set;
}
signed('transmitter.jwk', 'transmitter.jwks');
sub jwt {
    my (%claims) = @_;
    my ($t) = signed('issuer.jwk', 'issuer.jwks', { header => { typ => 'at+jwt' }, claims => {
        iss => $ISS, aud => 'api', exp => $NOW + 600, iat => $NOW - 20, %claims } });
    return $t;
}
my %jwt = (alice => jwt(sub => 'alice', jti => 'jwt-a'), bob => jwt(sub => 'bob', jti => 'jwt-b'));

sub config {
    my ($index) = @_;
    my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys=$dir/transmitter.jwks token_lifetime=1h $index;";
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
    auth_oauth2_token_jwt_cache zone=jwts:1m;
    auth_oauth2_token_require_audience api;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_metrics; }
CONF
    return block_from(name => "drop $index", config => $config, http_config => $http);
}

idp_setup({
    'tok-alice-1' => { json => { active => \1, sub => 'alice', jti => 'j-a1', iss => $ISS, iat => $NOW - 20 } },
    'tok-alice-2' => { json => { active => \1, sub => 'alice', jti => 'j-a2', iss => $ISS, iat => $NOW - 20 } },
    'tok-bob'     => { json => { active => \1, sub => 'bob', jti => 'j-b', iss => $ISS, iat => $NOW - 20 } },
});

sub get {
    my ($uri, $token) = @_;
    return http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]))->{status};
}
sub push_set {
    my ($set) = @_;
    return http_request(raw_request('POST', '/ssf', ['Content-Type: application/secevent+jwt'], $set))->{status};
}
sub entries {
    my ($zone) = @_;
    my $m = http_request(raw_request('GET', '/metrics', []))->{body};
    return $m =~ /^oauth2_token_cache_entries\{zone="\Q$zone\E"\} (\d+)$/m ? $1 : undef;
}
sub idp_count { scalar @{ idp_requests() } }
sub fill {
    is(get('/api/', "tok-$_"), 200, "$_ passes (cached)") for qw(alice-1 alice-2 bob);
    is(get('/jwt/', $jwt{$_}), 200, "${_}'s JWT passes (cached)") for qw(alice bob);
    is(entries('intro'), 3, 'the introspection cache holds 3 entries');
    is(entries('jwts'), 2, 'the JWT cache holds 2 entries');
}

# 1. The index on (by default).
sub revocations {
    my $m = http_request(raw_request('GET', '/metrics', []))->{body};
    return $m =~ /^oauth2_token_ssf_revocations (\d+)$/m ? $1 : undef;
}
start_nginx(config('')) or BAIL_OUT('nginx');
is(revocations(), 0, 'the list\'s gauge: empty');
fill();
my $calls = idp_count();

is(push_set(set_of($SESSION_REVOKED, { format => 'jwt_id', iss => $ISS, jti => 'j-a1' })), 202,
    'a jwt_id subject: accepted');
is(entries('intro'), 2, 'jwt_id: that token\'s entry was dropped');
is(entries('jwts'), 2, 'jwt_id: the JWT cache keeps its entries');
like(error_log_text(), qr/SET accepted: event caep_session_revoked, .*, 1 cache entries dropped/,
    'the log line counts the entry dropped');

is(push_set(set_of($ACCOUNT_DISABLED, { format => 'iss_sub', iss => $ISS, sub => 'alice' })), 202,
    'account-disabled for alice: accepted');
is(entries('intro'), 1, 'account-disabled: alice\'s other entry was dropped (bob\'s stays)');
is(entries('jwts'), 1, 'account-disabled: alice\'s JWT entry was dropped (bob\'s stays)');
like(error_log_text(), qr/event risc_account_disabled, .*, 2 cache entries dropped/, '... 2 entries dropped');

my $logged = 0;
$logged += $_ for error_log_text() =~ /SET accepted: event \S+, (\d+) revocations/g;
ok($logged >= 3, "the SETs put $logged revocations on the list");
is(revocations(), $logged, 'the list\'s gauge counts them');
is(get('/api/', 'tok-bob'), 200, 'bob passes');
is(get('/jwt/', $jwt{bob}), 200, 'bob\'s JWT passes');
is(idp_count(), $calls, 'bob\'s token is still a cache hit');
is(get('/api/', 'tok-alice-2'), 401, 'alice\'s token is refused');
is(idp_count(), $calls + 1, '... after an IdP call: her entry was gone');
is(get('/api/', 'tok-alice-1'), 401, 'the jwt_id token is refused');
is(get('/jwt/', $jwt{alice}), 401, 'alice\'s JWT is refused');
stop_nginx();

# 2. index=off: the list refuses, the entries stay.
start_nginx(config('index=off')) or BAIL_OUT('nginx');
idp_reset();
idp_setup({
    'tok-alice-1' => { json => { active => \1, sub => 'alice', jti => 'j-a1', iss => $ISS, iat => $NOW - 20 } },
    'tok-alice-2' => { json => { active => \1, sub => 'alice', jti => 'j-a2', iss => $ISS, iat => $NOW - 20 } },
    'tok-bob'     => { json => { active => \1, sub => 'bob', jti => 'j-b', iss => $ISS, iat => $NOW - 20 } },
});
fill();
is(push_set(set_of($ACCOUNT_DISABLED, { format => 'iss_sub', iss => $ISS, sub => 'alice' })), 202,
    'index=off: accepted');
is(entries('intro'), 3, 'index=off: the entries stay');
is(get('/api/', 'tok-alice-2'), 401, 'index=off: alice\'s token is refused (from the cache)');
is(idp_count(), 3, '... without an IdP call');
stop_nginx();

# 3. A subject with more tokens than one chain of the index holds (16):
# the index spreads them over 8 chains, and a revocation drops them all.
start_nginx(config('')) or BAIL_OUT('nginx');
idp_reset();
my $MANY = 40;
idp_setup({ map { ("tok-carol-$_" => { json => { active => \1, sub => 'carol', jti => "j-c$_",
    iss => $ISS, iat => $NOW - 20 } }) } 1 .. $MANY });
my $passed = grep { get('/api/', "tok-carol-$_") == 200 } 1 .. $MANY;
is($passed, $MANY, "carol's $MANY tokens pass (cached)");
is(entries('intro'), $MANY, "the introspection cache holds $MANY entries");
is(push_set(set_of($ACCOUNT_DISABLED, { format => 'iss_sub', iss => $ISS, sub => 'carol' })), 202,
    'account-disabled for carol: accepted');
like(error_log_text(), qr/event risc_account_disabled, .*, $MANY cache entries dropped/,
    "... all $MANY entries dropped");
is(entries('intro'), 0, 'none of carol\'s entries stays');
stop_nginx();

like(OAuth2Test::run_must_die(block_from(name => 'small index', config => '',
    http_config => "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys=$dir/transmitter.jwks index=1k;")), qr/index is too small/, 'nginx -t: an index too small');

done_testing();
