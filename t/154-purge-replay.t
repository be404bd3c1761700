# A purge wins over anything older (issue 22 item 5): a sealed value recorded
# in Redis before a purge and written back afterwards (a replay by whoever can
# write to Redis) is not served: the purge left the token's cutoff in the
# gateway's zone, and an answer obtained at or before it is refused, so the
# IdP is asked. An answer obtained after the purge is served as usual.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Time::HiRes qw(time);
use POSIX ();

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('k' x 40) . "\n");
my $FAR = int(time) + 3600;
my $active = { json => { active => \1, sub => 'alice', exp => $FAR } };
my $inactive = { json => { active => \0 } };

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

my $redis = redis_start() or BAIL_OUT('redis');
# Revoked at the IdP right after its first answer; "later" is active throughout.
idp_setup({ replayed => [$active, $inactive], later => $active,
    inflight => [{ delay => 1, json => { active => \1, sub => 'bob', exp => $FAR } }, $active] });
start_nginx(block_from(name => 'gw1',
    fleet_config(name => 'gw1', redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY)))
    or BAIL_OUT('gateway');
my $GW = server_port();

is(st(api($SHARED, '/api/a', 'replayed')), '200 MISS', 'the gateway asks the IdP');
ok(wait_until(3, sub { scalar($redis->keys) >= 1 }), 'the answer reached Redis');
my ($slot) = $redis->keys;
my $recorded = $redis->hgetall($slot);
ok(scalar(keys %$recorded) >= 1, 'a sealed value is recorded') or BAIL_OUT('nothing to replay');

my $r = http_request({ method => 'POST', uri => '/purge', port => $GW,
    headers => ['Content-Type: application/x-www-form-urlencoded'], body => 'token=replayed' });
is($r->{status}, 200, 'purged');
ok(wait_until(3, sub { scalar($redis->keys) == 0 }), 'the purge removed the token from Redis');

# The replay: the recorded value goes back under its name.
$redis->hset($slot, $_, $recorded->{$_}) for keys %$recorded;
is(scalar($redis->keys), 1, 'the recorded value is back in Redis');
is(st(api($SHARED, '/api/a', 'replayed')), '401 MISS',
    'the replayed value is older than the purge: refused, the IdP is asked and says inactive');
is(calls_for('replayed'), 2, 'one more IdP call');

# An IdP call under way when the purge runs: its answer, asked for before
# the purge, is no answer; the request that asked asks again, and that
# answer, obtained after the purge, is served and stored.
my $pid = fork() // BAIL_OUT('fork');
if (!$pid) {
    my $got = st(api($SHARED, '/api/a', 'inflight'));
    POSIX::_exit($got eq '200 MISS' ? 0 : 1);
}
ok(wait_until(3, sub { calls_for('inflight') == 1 }), 'in flight: the IdP is being asked');
$r = http_request({ method => 'POST', uri => '/purge', port => $GW,
    headers => ['Content-Type: application/x-www-form-urlencoded'], body => 'token=inflight' });
is($r->{status}, 200, 'in flight: purged meanwhile');
waitpid($pid, 0);
is($? >> 8, 0, 'in flight: the request that asked got an answer (200 MISS)');
is(calls_for('inflight'), 2, 'in flight: it asked again after the purge');
is(st(api($SHARED, '/api/a', 'inflight')), '200 HIT', 'in flight: the answer obtained after the purge was stored');
is(calls_for('inflight'), 2, 'in flight: two IdP calls in all');

# An answer obtained after the purge is cached and served as usual.
is(st(api($SHARED, '/api/a', 'later')), '200 MISS', 'another token: asked');
is(st(api($SHARED, '/api/a', 'later')), '200 HIT', 'and served from the zone');
stop_nginx();

done_testing();
