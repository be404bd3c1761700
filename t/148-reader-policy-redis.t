# The reader's policy governs answers from the Redis tier (issue 22 item 2):
# an answer another gateway wrote with a long max_ttl is served by a gateway
# with a short one only within its own max_ttl, counted from when the IdP
# answered, not from when it reached Redis or this gateway's zone.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Time::HiRes qw(sleep time);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('k' x 40) . "\n");
my $FAR = int(time) + 3600;
my $active = { json => { active => \1, sub => 'alice', exp => $FAR } };
my $inactive = { json => { active => \0 } };

sub gw {
    my ($name, $redis, %o) = @_;
    return block_from(name => $name,
        fleet_config(name => $name, redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY, %o));
}
sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

my $redis = redis_start() or BAIL_OUT('redis');
# Both tokens are revoked at the IdP right after their first answer.
idp_setup({ early => [$active, $inactive], late => [$active, $inactive] });

# A lenient gateway (max_ttl=300s) learns both; it leaves the fleet.
start_nginx(gw('lenient', $redis, cache => 'max_ttl=300s')) or BAIL_OUT('gateway 1');
is(st(api($SHARED, '/api/a', 'early')), '200 MISS', 'the lenient gateway asks the IdP (early)');
is(st(api($SHARED, '/api/a', 'late')), '200 MISS', 'the lenient gateway asks the IdP (late)');
my $learnt = time;
ok(wait_until(3, sub { scalar($redis->keys) >= 2 }), 'both answers reached Redis');
stop_nginx();

# A strict gateway (max_ttl=3s) joins.
my $strict = start_gateway(%{ gw('strict', $redis, cache => 'max_ttl=3s') }) or BAIL_OUT('gateway 2');
is(st(api($SHARED, '/api/a', 'early')), '200 HIT_SHARED', 'within its own max_ttl the strict gateway serves the Redis answer');
sleep 0.05 while time < $learnt + 3.3;
is(st(api($SHARED, '/api/a', 'early')), '401 EXPIRED',
    'past its max_ttl since the IdP answered: its zone entry has expired, Redis does not stand in, the IdP is asked');
is(st(api($SHARED, '/api/a', 'late')), '401 MISS',
    'an answer in Redis older than its max_ttl is not served (HIT_SHARED) at all');
is(calls_for('early'), 2, 'early: asked again');
is(calls_for('late'), 2, 'late: asked again');
$strict->stop;

done_testing();
