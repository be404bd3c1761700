# The Redis tier on a Redis Cluster (issue 28): `auth_oauth2_token_redis
# SEEDS ... cluster` reads the slot map from a seed, sends each call to its
# slot's primary, follows -MOVED and -ASK, and reads the map again when a
# node fails. Three primaries, three replicas (redis-cli --cluster create),
# two gateways; all six nodes are the seeds.
#   1. Shared hits across slots: tokens on every primary, one IdP call each.
#   2. Purges across slots: a purge at one gateway removes the entry from
#      its slot's primary and reaches the other gateway (one channel: a
#      cluster broadcasts PUBLISH to every node).
#   3. A slot resharded during traffic (SETSLOT IMPORTING/MIGRATING,
#      MIGRATE, SETSLOT NODE): -ASK followed (ASKING at the importing
#      node), then -MOVED followed; no request fails.
#   4. A primary killed: its slots' tokens go to the IdP (no error), its
#      replica is promoted, and shared hits resume there without a reload.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use List::Util ();
use Time::HiRes qw(time);
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $SECRET = 'c' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub key_of { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }
sub slot_of { key_slot(key_of($_[0])) }

my @nodes = redis_cluster(primaries => 3, replicas => 1) or BAIL_OUT('cluster');
my %by_port = map { ($_->port => $_) } @nodes;
# [first, last, primary port, replica ports...]
sub ranges { for my $n (@nodes) { my @r = cluster_slots($n); return @r if @r } return () }
sub primary_of {
    my ($slot) = @_;
    my ($r) = grep { $_->[0] <= $slot && $slot <= $_->[1] } ranges();
    return $r ? $by_port{ $r->[2] } : undef;
}
my @ranges = ranges();
is(scalar(keys %{ { map { ($_->[2] => 1) } @ranges } }), 3, 'three primaries serve the slots');

# Tokens: tok-* anywhere; mig-* in one slot (resharded below); the slot's
# other tokens are found by trying names.
my $FAR = int(time) + 3600;
my @tok = map { "tok-$_" } 1 .. 30;
my $S = slot_of('mig-0');
my @mig = ('mig-0');
for (my $n = 1; @mig < 4 && $n < 2_000_000; $n++) {
    push @mig, "mig-$n" if slot_of("mig-$n") == $S;
}
is(scalar @mig, 4, "four tokens in slot $S");
my @fresh = map { "fresh-$_" } 1 .. 2000;
OAuth2Test::idp_setup({ map { ($_ => { json => { active => \1, sub => "user-$_", exp => $FAR } }) }
    @tok, @mig, @fresh, (map { ("down-$_", "after-$_") } 1 .. 200) });

my $servers = join ' ', map { 'server 127.0.0.1:' . $_->port . ';' } @nodes;
my %fleet = (redis_port => 0, shared_port => $SHARED, key_file => $KEY, redis => 'cluster',
    upstream_servers => $servers);
start_nginx(block_from(name => 'gw1', fleet_config(%fleet, name => 'gw1'))) or BAIL_OUT('gw1');
my $gw2 = start_gateway(fleet_config(%fleet, name => 'gw2')) or BAIL_OUT('gw2');
sub gw1_log { OAuth2Test::error_log_text() }

# Reads through connections that may have been closed by a role change.
sub exists_on {
    my ($node, $key, $asking) = @_;
    for (1 .. 2) {
        $node->try_cmd('ASKING') if $asking;
        my $n = $node->try_cmd('EXISTS', $key);
        return $n if !ref $n;
        delete $node->{sock};
    }
    return 0;
}

# A fresh token through whichever gateway answers (a MISS, written in the
# background to `$on`), then read at the other (a HIT_SHARED).
sub shared_hit {
    my ($token, $on, $asking) = @_;
    my $first = api($SHARED, '/api/x', $token);
    return 0 unless $first->{status} == 200 && $first->{cache} eq 'MISS';
    wait_until(5, sub { exists_on($on, key_of($token), $asking) }) or return 0;
    my $second = on_gateway($SHARED, $first->{gw} eq 'gw1' ? 'gw2' : 'gw1', '/api/x', $token) or return 0;
    return $second->{status} == 200 && $second->{cache} eq 'HIT_SHARED';
}

# Requests for fresh tokens (each a MISS: a read and a write of the tier);
# the statuses that were not 200.
my $next_fresh = 0;
sub traffic {
    my ($n) = @_;
    my @bad;
    for (1 .. $n) {
        my $r = api($SHARED, '/api/x', $fresh[$next_fresh++ % @fresh]);
        push @bad, "$r->{gw} $r->{status}" unless $r->{status} == 200;
    }
    return @bad;
}

subtest 'shared hits across slots' => sub {
    my %on;
    for my $t (@tok) {
        my $node = primary_of(slot_of($t));
        $on{ $node->port }++;
        ok(shared_hit($t, $node), "$t: a shared hit, its entry on the primary of slot " . slot_of($t));
    }
    is(scalar(keys %on), 3, 'the tokens live on all three primaries');
    for my $log (gw1_log(), $gw2->error_log) {
        like($log, qr/cluster: slot map read: 3 ranges on 3 primaries/, 'each gateway read the slot map');
    }
    is_deeply([grep { calls_for($_) != 1 } @tok], [], 'one IdP call per token in the fleet');
    unlike(gw1_log() . $gw2->error_log, qr/shared cache \(Redis\)/, 'no failed call');
    # Calls go through the upstream's balancer to their node (its servers are
    # the nodes), so keepalive serves them: 30 fresh tokens, a read and a
    # write each, open few connections.
    my $conns = sub { List::Util::sum(map { ($_->cmd('INFO', 'stats') =~ /total_connections_received:(\d+)/)[0] } @nodes) };
    # Commands a node redirected count as its rejected calls.
    my $rejected = sub {
        List::Util::sum(map { my $st = $_->cmd('INFO', 'commandstats');
            List::Util::sum(0, $st =~ /^cmdstat_h(?:get|set):.*rejected_calls=(\d+)/mg) } @nodes);
    };
    my ($before, $rejected_before) = ($conns->(), $rejected->());
    is_deeply([traffic(30)], [], '30 fresh tokens: 200');
    ok(wait_until(5, sub { !grep { !exists_on(primary_of(slot_of($_)), key_of($_)) } @fresh[0 .. 29] }),
        'their entries written on their primaries');
    my $opened = $conns->() - $before;
    cmp_ok($opened, '<', 20, "60 calls opened $opened connections (keepalive)");
    is($rejected->() - $rejected_before, 0, 'no call went to a wrong node (no HGET or HSET redirected)');
};

subtest 'purges across slots' => sub {
    ok(wait_until(10, sub { (List::Util::sum(map { $_->numsub('oauth2:purge') } @nodes) // 0) >= 2 }),
        'both gateways subscribed (on some node)');
    my @three = @tok[0 .. 2];
    for my $t (@three) {
        my $r = on_gateway($SHARED, 'gw1', '/api/x', $t);
        is($r && $r->{cache}, 'HIT', "gw1 has $t in its zone");
        $r = OAuth2Test::http_request({ method => 'POST', uri => '/purge', port => $gw2->port,
            headers => ['Content-Type: application/x-www-form-urlencoded'], body => "token=$t" });
        is($r->{status}, 200, "purge of $t at gw2: 200");
        is(exists_on(primary_of(slot_of($t)), key_of($t)), 0, "its entry left the primary of slot " . slot_of($t));
        my $again;
        ok(wait_until(5, sub { $again = on_gateway($SHARED, 'gw1', '/api/x', $t); $again && $again->{cache} ne 'HIT' }),
            "gw1 heard the purge of $t");
    }
};

subtest 'a slot resharded during traffic: ASK, then MOVED' => sub {
    my $A = primary_of($S);
    my ($B) = grep { $_ != $A } map { $by_port{ $_->[2] } } @ranges;
    my ($idA, $idB) = map { $_->cmd('CLUSTER', 'MYID') } $A, $B;
    my @bad;
    # mig-0 written before the move, by one gateway (X), read at the other (Y) later.
    my $other = sub { $_[0] eq 'gw1' ? 'gw2' : 'gw1' };
    my $log_of = sub { $_[0] eq 'gw1' ? gw1_log() : $gw2->error_log };
    my $r = api($SHARED, '/api/x', $mig[0]);
    is($r->{cache}, 'MISS', "mig-0 read at $r->{gw}");
    my $y0 = $other->($r->{gw});
    ok(wait_until(5, sub { exists_on($A, key_of($mig[0])) }), "its entry on the slot's primary");
    push @bad, traffic(20);

    is($B->cmd('CLUSTER', 'SETSLOT', $S, 'IMPORTING', $idA), 'OK', 'the other primary imports the slot');
    is($A->cmd('CLUSTER', 'SETSLOT', $S, 'MIGRATING', $idB), 'OK', 'the primary migrates it');
    push @bad, traffic(20);
    # A new name of the slot is not on A: -ASK sends it to B.
    ok(shared_hit($mig[1], $B, 1), 'a token of the migrating slot: written at the importing node (ASK), read there by the other gateway');
    is(calls_for($mig[1]), 1, 'one IdP call for it');
    my $stats = $B->cmd('INFO', 'commandstats');
    like($stats, qr/cmdstat_asking:calls=[1-9]/, 'the gateways sent ASKING to the importing node');
    # mig-0 moves: read at Y (not in its zone), through A's -ASK.
    is($A->cmd('MIGRATE', '127.0.0.1', $B->port, '', 0, 5000, 'KEYS', key_of($mig[0])), 'OK', 'MIGRATE moves mig-0');
    push @bad, traffic(20);
    $r = on_gateway($SHARED, $y0, '/api/x', $mig[0]);
    is($r && $r->{cache}, 'HIT_SHARED', "mig-0 read at $y0 where it moved");
    # mig-2 written at X (through ASK), then the slot is B's.
    $r = api($SHARED, '/api/x', $mig[2]);
    is($r->{cache}, 'MISS', "mig-2 read at $r->{gw}");
    my $y2 = $other->($r->{gw});
    ok(wait_until(5, sub { exists_on($B, key_of($mig[2]), 1) }), 'its entry at the importing node');
    for my $node (map { $by_port{ $_->[2] } } @ranges) {
        my $set = $node->try_cmd('CLUSTER', 'SETSLOT', $S, 'NODE', $idB);
        is($set, 'OK', 'SETSLOT NODE on ' . $node->port) or diag(explain($set));
    }
    ok(wait_until(10, sub { (primary_of($S) // 0) == $B }), 'the slot is B\'s');
    # Y's map still says A: -MOVED, followed, and the map read again.
    $r = on_gateway($SHARED, $y2, '/api/x', $mig[2]);
    is($r && $r->{cache}, 'HIT_SHARED', "mig-2 read at $y2 through -MOVED");
    like($log_of->($y2), qr/cluster: slot $S moved to 127\.0\.0\.1:${\ $B->port}; reading the slot map again/,
        "$y2 was told -MOVED");
    push @bad, traffic(20);
    ok(shared_hit($mig[3], $B), 'a new token of the slot: on its new primary, shared');
    is_deeply(\@bad, [], 'no request failed during the resharding');
    unlike(gw1_log() . $gw2->error_log, qr/shared cache \(Redis\) redirect/, 'no call gave up on redirections');
    is_deeply([grep { calls_for($_) != 1 } @mig], [], 'one IdP call per token of the slot');
};

subtest 'a primary killed: misses, failover, shared hits resume' => sub {
    my ($range) = grep { $_->[2] != primary_of($S)->port } ranges();
    my ($C, $R) = ($by_port{ $range->[2] }, $by_port{ $range->[3] });
    ok($C && $R, 'a primary and its replica') or return;
    my $in_C = sub { my $s = slot_of($_[0]); $range->[0] <= $s && $s <= $range->[1] };
    my @down = grep { $in_C->($_) } map { "down-$_" } 1 .. 200;
    my @after = grep { $in_C->($_) } map { "after-$_" } 1 .. 200;
    ok(@down >= 10 && @after >= 10, 'tokens of its slots');
    kill 'KILL', $C->pid;
    waitpid($C->pid, 0);
    delete $C->{pid};
    my @bad;
    for my $t (@down[0 .. 4]) {
        my $r = api($SHARED, '/api/x', $t);
        push @bad, "$t $r->{gw} $r->{status} $r->{cache}" unless $r->{status} == 200;
    }
    is_deeply(\@bad, [], 'its slots\' tokens go to the IdP, no error');
    ok(wait_until(10, sub { gw1_log() . $gw2->error_log =~ /shared cache \(Redis\) connect/ }),
        'the failed calls are logged');
    my $role;
    ok(wait_until(30, sub {
        $role = $R->try_cmd('ROLE');
        my $info = $R->try_cmd('CLUSTER', 'INFO') // '';
        ref $role eq 'ARRAY' && $role->[0] eq 'master' && !ref $info && $info =~ /cluster_state:ok/;
    }), 'the replica is promoted') or diag(explain($role));
    # The gateways find it through the map, read again after failed calls.
    my $i = 0;
    ok(wait_until(20, sub { shared_hit($after[$i++ % @after], $R) }), 'shared hits resume on the new primary');
    my $t = $after[$i++];
    ok(shared_hit($t, $R), "and again ($t)");
    is(calls_for($t), 1, 'one IdP call for it');
    push @bad, traffic(20);
    is_deeply(\@bad, [], 'no request failed');
};

done_testing();
