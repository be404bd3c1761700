# Redis Cluster's slot map read at worker start (issue 28): each worker of a
# gateway with `cluster` reads CLUSTER SLOTS when it starts, in the
# background (a request with no client, through the Redis location), so its
# first calls go straight to their slots' primaries; while the cluster
# cannot be reached the worker starts anyway and tries again with a
# backoff.
#   1. Three primaries; a gateway with two workers: both read the map
#      before any request; then calls for tokens on every primary are
#      never redirected (no HGET/HSET rejected by a node) and read no map.
#   2. A one-node cluster down when a gateway starts: the gateway starts and
#      serves; once the node is back, each worker reads the map without any
#      request.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use List::Util ();
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);

start_servers();
my $SECRET = 'e' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub key_of { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }
sub slot_of { key_slot(key_of($_[0])) }

my $FAR = int(time) + 3600;
my @tok = map { "tok-$_" } 1 .. 30;
OAuth2Test::idp_setup({ map { ($_ => { json => { active => \1, sub => "user-$_", exp => $FAR } }) } @tok, 'solo' });

sub stat_of {
    my ($node, $cmd, $what) = @_;
    my $st = $node->try_cmd('INFO', 'commandstats') // '';
    return !ref $st && $st =~ /^cmdstat_\Q$cmd\E:.*\b$what=(\d+)/m ? $1 : 0;
}
sub reads_of { my $log = $_[0]->error_log; my @n = $log =~ /cluster: slot map read: /g; scalar @n }

subtest 'each worker reads the map at start; first calls go straight to their primaries' => sub {
    my @nodes = redis_cluster(primaries => 3, replicas => 0) or return fail('cluster');
    my %by_port = map { ($_->port => $_) } @nodes;
    my @ranges = cluster_slots($nodes[0]);
    my $primary_of = sub {
        my ($slot) = @_;
        my ($r) = grep { $_->[0] <= $slot && $slot <= $_->[1] } @ranges;
        return $by_port{ $r->[2] };
    };
    my $map_reads = sub { List::Util::sum(map { stat_of($_, 'cluster|slots', 'calls') } @nodes) };
    my $redirected = sub { List::Util::sum(map { stat_of($_, 'hget', 'rejected_calls') + stat_of($_, 'hset', 'rejected_calls') } @nodes) };
    my $before = $map_reads->();
    my $shared = OAuth2Test::reserve_port();
    my $servers = join ' ', map { 'server 127.0.0.1:' . $_->port . ';' } @nodes;
    my $gw = start_gateway(fleet_config(name => 'gw1', redis_port => 0, shared_port => $shared, key_file => $KEY,
        redis => 'cluster', upstream_servers => $servers), workers => 2) or return fail('gateway');
    ok(wait_until(10, sub { reads_of($gw) >= 2 }), 'both workers read the slot map, before any request')
        or diag($gw->error_log);
    like($gw->error_log, qr/cluster: slot map read: 3 ranges on 3 primaries/, '... 3 ranges on 3 primaries');
    my %readers = map { ($_ => 1) } $gw->error_log =~ /(\d+)#\d+: auth_oauth2_token: cluster: slot map read/g;
    is(scalar(keys %readers), 2, '... one read by each worker (two pids)');
    cmp_ok($map_reads->() - $before, '>=', 2, 'the nodes answered CLUSTER SLOTS for them');

    my ($reads, $rejected) = ($map_reads->(), $redirected->());
    my %on;
    for my $t (@tok) {
        my $r = api($shared, '/api/x', $t);
        is($r->{status}, 200, "$t: 200");
        $on{ $primary_of->(slot_of($t))->port }++;
    }
    is(scalar(keys %on), 3, 'the tokens live on all three primaries');
    ok(wait_until(5, sub { !grep { !$primary_of->(slot_of($_))->cmd('EXISTS', key_of($_)) } @tok }),
        'their entries written on their primaries');
    is($redirected->() - $rejected, 0, 'no HGET or HSET was redirected (no -MOVED): the first calls knew the map');
    is($map_reads->(), $reads, 'and no call read the map again');
    unlike($gw->error_log, qr/shared cache \(Redis\)/, 'no failed call');
    unlike($gw->error_log, qr/\[alert\]/, 'no alert (the request with no client ended cleanly)');
    $gw->stop;
    $_->stop for @nodes;
};

subtest 'the cluster down at start: the workers start, then read the map when it is back' => sub {
    my $solo = redis_start(args => ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
        '--cluster-node-timeout', '1000', '--cluster-port', OAuth2Test::reserve_port(),
        # Alone, a node does not know its address (CLUSTER SLOTS would say "").
        '--cluster-announce-ip', '127.0.0.1']) or return fail('node');
    is($solo->cmd('CLUSTER', 'ADDSLOTSRANGE', 0, 16383), 'OK', 'a one-node cluster');
    ok(wait_until(10, sub { ($solo->try_cmd('CLUSTER', 'INFO') // '') =~ /cluster_state:ok/ }), 'it is up');
    $solo->stop;
    my $shared = OAuth2Test::reserve_port();
    my $gw = start_gateway(fleet_config(name => 'gw2', redis_port => $solo->port, shared_port => $shared,
        key_file => $KEY, redis => 'cluster'), workers => 2);
    ok($gw, 'the gateway starts while its cluster cannot be reached') or return;
    ok(wait_until(5, sub { $gw->error_log =~ /shared cache \(Redis\) connect/ }), 'the workers\' reads failed (logged)');
    is(reads_of($gw), 0, 'no map yet');
    ok($solo->restart, 'the node is back');
    ok(wait_until(10, sub { ($solo->try_cmd('CLUSTER', 'INFO') // '') =~ /cluster_state:ok/ }), 'its cluster is up');
    ok(wait_until(15, sub { reads_of($gw) >= 2 }), 'both workers read the map, tried again without a request')
        or diag($gw->error_log);
    my $r = api($shared, '/api/x', 'solo');
    is($r->{status}, 200, 'a request: 200');
    ok(wait_until(5, sub { $solo->cmd('EXISTS', key_of('solo')) }), 'its entry written on the node');
    unlike($gw->error_log, qr/\[alert\]/, 'no alert');
    $gw->stop;
};

done_testing();
