# Revocation polled from the IdP (RFC 8936), across a fleet: gateway 1
# polls a Shared Signals transmitter (t/oidc/ssf-poll-transmitter.mjs) and,
# with the Redis tier, tells the fleet of each SET it applies as a pushed
# one is told: its revocations on the Redis tier's list and channel, its
# jti in the fleet's replay store. Gateway 2, which does not poll, refuses
# alice's cached token while bob's passes; a gateway started after the
# event reads it from Redis. A SET is acknowledged only once the fleet was
# told: with Redis down the polled SET is applied on gateway 1 but not
# acknowledged (logged once), and once Redis is back it is told and
# acknowledged, once. A SET the fleet had already (pushed to gateway 2
# first) is still acknowledged.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use JSON::PP;
use POSIX ();

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', "ssf-poll-fleet-secret-0123456789abcdef012345\n");
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $JSON = JSON::PP->new->canonical;
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';
my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
my $SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';

sub signed { return SsfTest::signed("$dir/t.jwk", "$dir/t.jwks", @_) }
sub revoked {
    my ($who, $jti) = @_;
    my ($set) = signed({ claims => { iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => $jti,
        sub_id => { format => 'iss_sub', iss => $ISS, sub => $who }, events => { $SESSION_REVOKED => {} } } });
    return $set;
}
signed();

# The poll transmitter, and what it saw.
open my $fh, '>', "$dir/poll-bearer" or die $!;
print $fh "poll-fleet-token-0123456789abcdef\n";
close $fh;
chmod 0600, "$dir/poll-bearer";
my $TPORT = OAuth2Test::reserve_port();
OAuth2Test::release_port($TPORT);
my $tpid = fork();
die "fork: $!" unless defined $tpid;
if (!$tpid) {
    open STDOUT, '>>', "$dir/transmitter.log";
    open STDERR, '>&', \*STDOUT;
    exec $NODE, 't/oidc/ssf-poll-transmitter.mjs', $TPORT, "$dir/poll-bearer", "$dir/transmitter-state.json"
        or POSIX::_exit(127);
}
END { if ($tpid) { local $?; kill 'TERM', $tpid; waitpid($tpid, 0) } }
wait_until(10, sub { OAuth2Test::can_connect($TPORT) }) or BAIL_OUT('the poll transmitter did not start');

sub queue { SsfTest::poll_queue($TPORT, @_) }
sub tstate { SsfTest::poll_state($TPORT) }
sub acks { tstate()->{acks}{ $_[0] } // 0 }
sub polls { scalar @{ tstate()->{polls} } }

# Each gateway: the fleet's configuration, a receiver and a push endpoint;
# gateway 1 also polls, through a location with the Redis tier.
sub gw {
    my ($name, $redis, $poll) = @_;
    my %s = fleet_config(name => $name, redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY,
        cache => 'max_ttl=300s');
    $s{http_config} = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys=$dir/t.jwks max_age=2m token_lifetime=1h;\n" . $s{http_config};
    $s{config} .= "location = /ssf { auth_oauth2_token_shared_cache /_oauth2_redis; auth_oauth2_token_ssf_push; }\n";
    $s{config} .= <<CONF if $poll;
location = /_ssf_poll {
    internal;
    auth_oauth2_token_shared_cache /_oauth2_redis;
    auth_oauth2_token_ssf_poll interval=1s max_events=10 bearer_file=$dir/poll-bearer;
    proxy_pass http://127.0.0.1:$TPORT/poll;
}
CONF
    return \%s;
}
sub st { my ($r) = @_; return $r ? $r->{status} : 'no answer' }
sub on { my ($gw, $token) = @_; return st(on_gateway($SHARED, $gw, '/api/a', $token)) }

idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20,
    exp => $NOW + 3600 } }) } qw(alice bob carol dave) });

my $redis = redis_start() or BAIL_OUT('redis');
start_nginx(block_from(name => 'gw1', %{ gw('gw1', $redis, 1) })) or BAIL_OUT('gateway 1');
my $gw2 = start_gateway(%{ gw('gw2', $redis, 0) }) or BAIL_OUT('gateway 2');
ok($redis->wait_numsub('oauth2:purge', 2), 'both gateways subscribed to the channel');
ok(wait_until(10, sub { polls() >= 1 }), 'gateway 1 polls the transmitter');
for my $who (qw(alice bob carol dave)) {
    is(on($_, "tok-$who"), 200, "before: ${who}'s token passes on $_") for qw(gw1 gw2);
}
my $hit = on_gateway($SHARED, 'gw2', '/api/a', 'tok-alice');
is($hit && $hit->{cache}, 'HIT', 'gateway 2 has alice\'s token in its cache');

# 1. Polled by gateway 1, refused on gateway 2 too (from its cache), and
# acknowledged once.
queue('fleet-1' => revoked('alice', 'fleet-1'));
ok(wait_until(10, sub { on('gw2', 'tok-alice') eq '401' }),
    'gateway 2, which does not poll, refuses alice\'s cached token');
is(on('gw1', 'tok-alice'), 401, 'gateway 1 refuses alice\'s token');
is(on('gw2', 'tok-bob'), 200, 'gateway 2 still passes bob\'s token');
like($gw2->error_log, qr/token revoked by a Shared Signals event/, 'gateway 2 logs the refusal');
ok(wait_until(10, sub { acks('fleet-1') >= 1 }), 'the SET is acknowledged');
my $seen = polls();
ok(wait_until(10, sub { polls() >= $seen + 2 }), 'polls go on');
is(acks('fleet-1'), 1, 'acknowledged once');
my @names = grep { length } split /\n/, join("\n", map { ref $_ ? @$_ : $_ } $redis->cmd('KEYS', '{oauth2:ssf}j:*'));
is(scalar @names, 1, 'its jti is in the fleet\'s replay store');
ok($redis->cmd('ZCARD', '{oauth2:ssf}') >= 1, 'its revocations are on the Redis tier\'s list');

# 2. A gateway started after the event reads it from Redis.
my $gw3 = start_gateway(%{ gw('gw3', $redis, 0) }) or BAIL_OUT('gateway 3');
ok($redis->wait_numsub('oauth2:purge', 3), 'gateway 3 subscribed');
is(on('gw3', 'tok-alice'), 401, 'gateway 3, started after the event, refuses alice\'s token');
is(on('gw3', 'tok-bob'), 200, 'gateway 3 passes bob\'s token');
$gw3->stop;

# 3. Redis down while a SET is polled: applied on gateway 1, not
# acknowledged; acknowledged once Redis is back, and the fleet told.
$redis->stop;
queue('fleet-2' => revoked('carol', 'fleet-2'));
ok(wait_until(10, sub { on('gw1', 'tok-carol') eq '401' }), 'Redis down: gateway 1 applied the polled SET');
$seen = polls();
ok(wait_until(15, sub { polls() >= $seen + 2 }), 'Redis down: gateway 1 polls again');
is(acks('fleet-2'), 0, 'Redis down: the SET is not acknowledged');
ok((grep { $_->{jti} eq 'fleet-2' } @{ tstate()->{queue} }), 'Redis down: the transmitter keeps it');
my @down = error_log_text() =~ /SSF poll: \d+ SETs applied here but the Redis tier was not told/g;
is(scalar @down, 1, 'Redis down: logged once, though polled again');
$redis->restart or BAIL_OUT('redis again');
ok(wait_until(20, sub { acks('fleet-2') >= 1 }), 'Redis back: the SET is acknowledged');
ok($redis->wait_numsub('oauth2:purge', 2, 15), 'both gateways subscribed again');
ok(wait_until(10, sub { on('gw2', 'tok-carol') eq '401' }), 'Redis back: gateway 2 refuses carol\'s token');
$seen = polls();
ok(wait_until(10, sub { polls() >= $seen + 2 }), 'polls go on');
is(acks('fleet-2'), 1, 'acknowledged once');
my @back = error_log_text() =~ /SSF poll: the Redis tier is told again/g;
is(scalar @back, 1, 'Redis back: logged once');

# 4. A SET the fleet had already (pushed to gateway 2, then delivered by
# the poll): applied on gateway 1 and acknowledged.
my $dave = revoked('dave', 'fleet-3');
is(http_request({ method => 'POST', uri => '/ssf', port => $gw2->port,
    headers => ['Content-Type: application/secevent+jwt'], body => $dave })->{status}, 202,
    'the SET pushed to gateway 2 is accepted');
queue('fleet-3' => $dave);
ok(wait_until(10, sub { acks('fleet-3') >= 1 }), 'the same SET polled by gateway 1: acknowledged');
is(on('gw1', 'tok-dave'), 401, 'gateway 1 refuses dave\'s token');
is(on('gw2', 'tok-bob'), 200, 'bob\'s token still passes');
is_deeply(tstate()->{queue}, [], 'nothing is left at the transmitter');
unlike(error_log_text(), qr/\[(?:alert|crit|emerg)\]/, 'gateway 1 logged no alert');

done_testing();
