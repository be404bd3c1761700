# The Redis tier behind Redis Sentinel (issue 28): `auth_oauth2_token_redis
# SENTINELS ... sentinel=NAME` asks the sentinels where the primary is, and
# follows it when they fail over. One primary, one replica, three
# sentinels (quorum 2), two gateways.
#   1. The gateways learn the primary from the sentinels: a token written
#      by one is a shared hit at the other, and the key is on the primary.
#   2. `SENTINEL FAILOVER` under traffic: no request fails (a Redis miss
#      goes to the IdP), every gateway logs the move, shared hits resume on
#      the new primary; what the gateways write after the switch is not on
#      the old one (still a primary until the sentinels reconfigure it).
#      The sentinels then make it a replica. (Writes in the moment between
#      the promotion and +switch-master do go to the old primary, and are
#      lost when it becomes a replica: entries missing, i.e. later misses.)
#   3. A purge at one gateway reaches the other (revocation channel on the
#      primary the sentinels named).
#   4. A sentinel that is down is skipped: with the first one stopped, a
#      restarted gateway still finds the primary.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Time::HiRes qw(time);
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $SECRET = 's' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub key_of { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }
my $NAME = 'oauth2-primary';

my $primary = redis_start() or BAIL_OUT('primary');
my $replica = redis_start(args => ['--replicaof', '127.0.0.1', $primary->port]) or BAIL_OUT('replica');
ok(wait_until(10, sub { ($replica->try_cmd('INFO', 'replication') // '') =~ /master_link_status:up/ }),
    'the replica follows the primary');
my @sentinels = map { redis_start(sentinel => [$NAME, $primary->port]) or BAIL_OUT("sentinel $_") } 1 .. 3;
# Failover needs each sentinel to know the replica and the others.
ok(wait_until(20, sub {
    !grep {
        my $m = $_->try_cmd('SENTINEL', 'master', $NAME);
        my %m = ref $m eq 'ARRAY' ? @$m : ();
        ($m{'num-slaves'} // 0) < 1 || ($m{'num-other-sentinels'} // 0) < 2
    } @sentinels
}), 'the sentinels know the replica and each other');

my $FAR = int(time) + 3600;
OAuth2Test::idp_setup({ map { ($_ => { json => { active => \1, sub => "user-$_", exp => $FAR } }) }
    (map { ("tok-$_", "late-$_") } 1 .. 40), map { "fresh-$_" } 1 .. 1000 });

my $servers = join ' ', map { 'server 127.0.0.1:' . $_->port . ';' } @sentinels;
my %fleet = (redis_port => 0, shared_port => $SHARED, key_file => $KEY, redis => "sentinel=$NAME",
    upstream_servers => $servers);
start_nginx(block_from(name => 'gw1', fleet_config(%fleet, name => 'gw1'))) or BAIL_OUT('gw1');
my $gw2 = start_gateway(fleet_config(%fleet, name => 'gw2')) or BAIL_OUT('gw2');
sub gw1_log { OAuth2Test::error_log_text() }

sub primary_port {
    my $r = $sentinels[-1]->try_cmd('SENTINEL', 'get-master-addr-by-name', $NAME);
    return ref $r eq 'ARRAY' ? $r->[1] : 0;
}
# The admin clients' connections are closed when a server changes role:
# a second try opens a new one.
sub keys_of { my ($r, $p) = @_; my @k = eval { $r->keys($p) }; @k = $r->keys($p) if $@; return @k }
sub exists_on { my ($r, $key) = @_; my $n = $r->try_cmd('EXISTS', $key); $n = $r->try_cmd('EXISTS', $key) if ref $n; return !ref $n && $n }

# A fresh token through whichever gateway answers (a MISS, written in the
# background to the primary `$on`), then read at the other.
sub shared_hit {
    my ($token, $on) = @_;
    my $first = api($SHARED, '/api/x', $token);
    return 0 unless $first->{status} == 200 && $first->{cache} eq 'MISS';
    wait_until(5, sub { exists_on($on, key_of($token)) }) or return 0;
    my $second = on_gateway($SHARED, $first->{gw} eq 'gw1' ? 'gw2' : 'gw1', '/api/x', $token) or return 0;
    return $second->{status} == 200 && $second->{cache} eq 'HIT_SHARED';
}

subtest 'the gateways learn the primary from the sentinels' => sub {
    ok(wait_until(10, sub { gw1_log() =~ /sentinel: the Redis tier's primary is 127\.0\.0\.1:${\ $primary->port}/ }),
        "gw1 logs the primary");
    ok(wait_until(10, sub { $gw2->error_log =~ /primary is 127\.0\.0\.1:${\ $primary->port}/ }), 'gw2 too');
    # The first write may race the worker's first answer from a sentinel.
    ok(shared_hit('tok-1', $primary), 'a token written by one gateway is a shared hit at the other, its key on the primary');
    is(calls_for('tok-1'), 1, 'one IdP call for it in the fleet');
};

subtest 'SENTINEL FAILOVER under traffic' => sub {
    my $old = $primary->port;
    is(primary_port(), $old, 'the sentinels name the first primary');
    my $r = $sentinels[0]->cmd('SENTINEL', 'FAILOVER', $NAME);
    is($r, 'OK', 'failover started');
    my ($sent, @bad) = (0);
    # Fresh tokens: each request reads the tier, asks the IdP and writes.
    my $i = 0;
    my $moved = wait_until(30, sub {
        my $res = api($SHARED, '/api/x', 'fresh-' . (++$i > 1000 ? ($i = 1) : $i));
        $sent++;
        push @bad, "$res->{gw} $res->{status}" unless $res->{status} == 200;
        return primary_port() == $replica->port
            && gw1_log() =~ /primary moved from 127\.0\.0\.1:$old to 127\.0\.0\.1:${\ $replica->port}/
            && $gw2->error_log =~ /primary moved from 127\.0\.0\.1:$old to 127\.0\.0\.1:${\ $replica->port}/;
    });
    ok($moved, 'the sentinels promoted the replica, and both gateways followed')
        or diag(gw1_log() . $gw2->error_log);
    is_deeply(\@bad, [], "no request failed during the failover ($sent sent)");
    # Written after both gateways followed: on the new primary only.
    my $n = 0;
    ok(wait_until(15, sub { shared_hit('late-' . ++$n, $replica) }), "shared hits resume on the new primary (late-$n)");
    ok(shared_hit('late-' . ++$n, $replica), "and again (late-$n)");
    my @landed = grep { exists_on($primary, key_of("late-$_")) } 1 .. $n;
    # Once a replica of the new primary it holds them too: the check means
    # something while it is still a primary (it is, within the sentinels'
    # 10 s until they reconfigure it).
    my $role_after = $primary->try_cmd('ROLE');
    $role_after = $primary->try_cmd('ROLE') if ref $role_after eq 'HASH';
    my $still = ref $role_after eq 'ARRAY' && $role_after->[0] eq 'master';
    ok(!@landed || !$still, 'no write after the switch landed on the old primary ('
        . ($still ? 'still a primary' : 'a replica already') . ')');
    my $role;
    ok(wait_until(30, sub {
        $role = $primary->try_cmd('ROLE');
        ref $role eq 'ARRAY' && $role->[0] =~ /^(?:slave|replica)\z/;
    }), 'the sentinels make the old primary a replica') or diag(explain($role));
    my $refused = ($primary->try_cmd('INFO', 'errorstats') // '') =~ /errorstat_READONLY:count=(\d+)/ ? $1 : 0;
    note("writes the demoted primary refused (-READONLY, so nothing landed): $refused");
};

subtest 'purges reach the other gateway through the new primary' => sub {
    # late-1 is in both zones (MISS at one, HIT_SHARED at the other).
    ok(wait_until(10, sub { $replica->numsub('oauth2:purge') + $primary->numsub('oauth2:purge') >= 2 }),
        'both revocation channels are subscribed');
    my $before = on_gateway($SHARED, 'gw1', '/api/x', 'late-1');
    is($before && $before->{cache}, 'HIT', 'gw1 has late-1 in its zone');
    my $r = OAuth2Test::http_request({ method => 'POST', uri => '/purge', port => $gw2->port,
        headers => ['Content-Type: application/x-www-form-urlencoded'], body => 'token=late-1' });
    is($r->{status}, 200, 'purge at gw2: 200');
    is($replica->cmd('EXISTS', key_of('late-1')), 0, 'the entry left the primary');
    my $again;
    ok(wait_until(5, sub { $again = on_gateway($SHARED, 'gw1', '/api/x', 'late-1'); $again && $again->{cache} ne 'HIT' }),
        'gw1 heard the purge: the token left its zone (a MISS, or HIT_SHARED when gw2 asked the IdP first)');
};

subtest 'a sentinel that is down is skipped' => sub {
    $sentinels[0]->stop;
    $gw2->stop;
    $gw2->start or return fail('gw2 restarts');
    my $port = $replica->port;
    ok(wait_until(10, sub { $gw2->error_log =~ /primary is 127\.0\.0\.1:$port/ }),
        'a restarted gateway finds the primary through the other sentinels');
    like($gw2->error_log, qr/sentinel: sentinel 1 of the upstream could not tell the primary/,
        'and says which sentinel it skipped');
    my $r = on_gateway($SHARED, 'gw2', '/api/x', 'late-1');
    is($r && $r->{cache}, 'HIT_SHARED', 'and reads the tier there');
};

done_testing();
