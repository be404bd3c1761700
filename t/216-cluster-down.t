# Redis Cluster down (issue 28): a node that says `-CLUSTERDOWN` (it lost a
# slot's primary: a failover may be under way) makes the call a miss, logged
# as an error reply, and makes the gateway read the slot map again (as after
# -MOVED, at most every 500 ms); while the cluster is up, no call reads it.
# A real cluster of three primaries: one of them gives up a slot
# (CLUSTER DELSLOTS), so it is down for it, then takes it back.
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
my $SECRET = 'd' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub key_of { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }
sub slot_of { key_slot(key_of($_[0])) }

my @nodes = redis_cluster(primaries => 3, replicas => 0) or BAIL_OUT('cluster');
my %by_port = map { ($_->port => $_) } @nodes;
# Read once: the test's own CLUSTER SLOTS would count as the gateway's.
my @ranges = cluster_slots($nodes[0]);
sub primary_of {
    my ($slot) = @_;
    my ($r) = grep { $_->[0] <= $slot && $slot <= $_->[1] } @ranges;
    return $r ? $by_port{ $r->[2] } : undef;
}
# How many CLUSTER SLOTS the nodes answered: the gateway's map reads.
sub map_reads {
    List::Util::sum(map { (($_->cmd('INFO', 'commandstats') =~ /^cmdstat_cluster\|slots:calls=(\d+)/m)[0] // 0) } @nodes);
}

my $FAR = int(time) + 3600;
my @tok = map { "tok-$_" } 1 .. 20;
my $S = slot_of('down-0');
my @down = ('down-0');
for (my $n = 1; @down < 3 && $n < 2_000_000; $n++) {
    push @down, "down-$n" if slot_of("down-$n") == $S;
}
is(scalar @down, 3, "three tokens in slot $S");
OAuth2Test::idp_setup({ map { ($_ => { json => { active => \1, sub => "user-$_", exp => $FAR } }) } @tok, @down });

my $servers = join ' ', map { 'server 127.0.0.1:' . $_->port . ';' } @nodes;
start_nginx(block_from(name => 'gw1', fleet_config(redis_port => 0, shared_port => $SHARED, key_file => $KEY,
    redis => 'cluster', upstream_servers => $servers))) or BAIL_OUT('gw1');
sub gw_log { OAuth2Test::error_log_text() }

my $P = primary_of($S);
ok($P, "slot $S has a primary") or BAIL_OUT('no primary');

subtest 'the cluster up: no map read after the first' => sub {
    my $r = api($SHARED, '/api/x', $tok[0]);
    is($r->{status}, 200, 'a first request: 200');
    ok(wait_until(5, sub { gw_log() =~ /cluster: slot map read: 3 ranges on 3 primaries/ }), 'the map was read');
    # Written entries: the calls reached their nodes.
    for my $t (@tok[1 .. 9]) {
        is(api($SHARED, '/api/x', $t)->{status}, 200, "$t: 200");
    }
    ok(wait_until(5, sub { !grep { !primary_of(slot_of($_))->cmd('EXISTS', key_of($_)) } @tok[1 .. 9] }),
        'their entries on their primaries');
    my $before = map_reads();
    for my $t (@tok[10 .. 19]) {
        is(api($SHARED, '/api/x', $t)->{status}, 200, "$t: 200");
    }
    ok(wait_until(5, sub { !grep { !primary_of(slot_of($_))->cmd('EXISTS', key_of($_)) } @tok[10 .. 19] }),
        'their entries on their primaries');
    is(map_reads(), $before, '20 calls of a cluster that is up read no map');
    unlike(gw_log(), qr/shared cache \(Redis\)/, 'no failed call');
};

subtest '-CLUSTERDOWN: a miss, logged, and the map read again' => sub {
    # Map reads are at least 500 ms apart: the first one must be older.
    Time::HiRes::sleep(0.6);
    my $before = map_reads();
    is($P->cmd('CLUSTER', 'DELSLOTS', $S), 'OK', "the primary of slot $S gives it up");
    ok(wait_until(5, sub { ($P->cmd('CLUSTER', 'INFO') // '') =~ /cluster_state:fail/ }), 'it says the cluster is down');
    my $answer = $P->try_cmd('GET', key_of($down[0]));
    like(ref $answer eq 'HASH' ? $answer->{error} : '', qr/^CLUSTERDOWN/, 'and answers -CLUSTERDOWN');
    my $r = api($SHARED, '/api/x', $down[0]);
    is($r->{status}, 200, 'a token of the slot: 200 (from the IdP)');
    is($r->{cache}, 'MISS', 'a miss');
    is(calls_for($down[0]), 1, 'one IdP call');
    ok(wait_until(5, sub { gw_log() =~ /shared cache \(Redis\) error reply.*-CLUSTERDOWN/ }),
        'the call is logged as an error reply -CLUSTERDOWN');
    ok(wait_until(5, sub { map_reads() > $before }), 'the gateway read the slot map again')
        or diag('CLUSTER SLOTS calls: ' . map_reads() . " (were $before)");
    unlike(gw_log(), qr/\[(?:alert|crit|emerg)\]/, 'nothing worse logged');
};

subtest 'the slot back: shared entries again' => sub {
    is($P->cmd('CLUSTER', 'ADDSLOTS', $S), 'OK', 'the primary takes the slot back');
    ok(wait_until(10, sub { !grep { ($_->try_cmd('CLUSTER', 'INFO') // '') !~ /cluster_state:ok/ } @nodes }),
        'the cluster is up');
    my $r;
    ok(wait_until(10, sub { $r = api($SHARED, '/api/x', $down[1]); $r->{status} == 200
        && $P->cmd('EXISTS', key_of($down[1])) }), 'a token of the slot: its entry written on the primary again');
    is(api($SHARED, '/api/x', $down[2])->{status}, 200, 'another: 200');
    ok(wait_until(5, sub { $P->cmd('EXISTS', key_of($down[2])) }), 'its entry written');
};

done_testing();
