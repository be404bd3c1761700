# Redis Cluster over native TLS (issue 28): three primaries with TLS ports
# (`tls-cluster yes`: the bus and replication speak TLS too, and a TLS
# client is told the nodes' TLS ports), the gateways' Redis location with
# auth_oauth2_token_redis_ssl on, verify on, the run's CA and the name
# redis.test.
#   1. Two gateways, every node a seed: the slot map is read over TLS,
#      each token's entry lands on its slot's primary, the other gateway
#      reads it (one IdP call per token), and calls reuse kept-alive TLS
#      connections.
#   2. One seed only: the other primaries are reached at the addresses the
#      map gives (not servers of the upstream), over TLS, their certificate
#      checked too.
#   3. A gateway that trusts another CA: every call a miss, nothing
#      written, the certificate's failure logged once.
# Skipped under Valkey: PyPI's valkey-server builds have no TLS.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);

plan skip_all => "PyPI's valkey-server builds have no TLS" if redis_flavor() eq 'valkey';

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $SECRET = 's' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub key_of { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }

my $pki = tls_pki();
my @nodes = redis_cluster(primaries => 3, replicas => 0, tls => $pki) or BAIL_OUT('a cluster with TLS');
my %by_port = map { ($_->port => $_) } @nodes;
# The test's client is on the plain ports: the map it reads names them.
sub primary_of {
    my ($slot) = @_;
    my ($r) = grep { $_->[0] <= $slot && $slot <= $_->[1] } cluster_slots($nodes[0]);
    return $r ? $by_port{ $r->[2] } : undef;
}
sub connections {
    my $n = 0;
    for (@nodes) { $n += $1 if $_->cmd('INFO', 'stats') =~ /total_connections_received:(\d+)/ }
    return $n;
}

my $TLS = "auth_oauth2_token_redis_ssl on; auth_oauth2_token_redis_ssl_verify on;"
    . " auth_oauth2_token_redis_ssl_name redis.test; auth_oauth2_token_redis_ssl_server_name on;";
sub gw {
    my ($name, $ca, @seeds) = @_;
    my %b = fleet_config(name => $name, redis_port => 0, shared_port => $SHARED, key_file => $KEY,
        redis => 'cluster', upstream_servers => join(' ', map { 'server 127.0.0.1:' . $_->tls_port . ';' } @seeds),
        redis_location => "$TLS auth_oauth2_token_redis_ssl_trusted_certificate $pki/$ca;");
    $b{config} .= "location = /metrics { auth_oauth2_token_metrics; }\n";
    return %b;
}
sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

my $FAR = int(time) + 3600;
my @tok = map { "tls-$_" } 1 .. 12;
my @one = map { "one-$_" } 1 .. 12;
my @more = map { "more-$_" } 1 .. 12;
my @bad = map { "bad-$_" } 1 .. 4;
idp_setup({ map { ($_ => { json => { active => \1, sub => "u-$_", exp => $FAR } }) } @tok, @more, @one, @bad });

# 1. Every node a seed, two gateways.
start_nginx(block_from(name => 'gw1', gw('gw1', 'ca.pem', @nodes))) or BAIL_OUT('gateway 1');
my $gw2 = start_gateway(gw('gw2', 'ca.pem', @nodes)) or BAIL_OUT('gateway 2');
my %on;
for my $t (@tok) {
    my $node = primary_of(key_slot(key_of($t)));
    $on{ $node->port }++;
    # Whichever gateway answers first asks the IdP; the other reads.
    my $first = api($SHARED, '/api/x', $t);
    is(st($first), '200 MISS', "$t: $first->{gw} asks the IdP");
    ok(wait_until(5, sub { $node->cmd('EXISTS', key_of($t)) }), "$t: its entry on its slot's primary, over TLS");
    my $other = $first->{gw} eq 'gw1' ? 'gw2' : 'gw1';
    is(st(on_gateway($SHARED, $other, '/api/x', $t)), '200 HIT_SHARED', "$t: $other reads it over TLS");
    is(calls_for($t), 1, "$t: one IdP call for both gateways");
}
is(scalar(keys %on), 3, 'the tokens live on all three primaries');
for my $log (OAuth2Test::error_log_text(), $gw2->error_log) {
    like($log, qr/cluster: slot map read: 3 ranges on 3 primaries/, 'each gateway read the slot map over TLS');
    unlike($log, qr/shared cache \(Redis\)|\[(?:alert|crit|emerg)\]/, 'no failed call');
}

# Keepalive: 24 more calls (fresh tokens: a read and a write each) open
# at most a few connections per node, not one per call.
my $before = connections();
for my $t (@more) {
    my $r = api($SHARED, '/api/x', $t);
    is(st($r), '200 MISS', "$t: a miss at $r->{gw}");
}
ok(wait_until(5, sub { !grep { my $t = $_; !grep { $_->cmd('EXISTS', key_of($t)) } @nodes } @more }),
    'all their entries written');
cmp_ok(connections() - $before, '<=', 12, 'the 24 calls reuse kept-alive TLS connections');
$gw2->stop;
stop_nginx();

# 2. One seed: the other primaries are reached at the map's addresses.
start_nginx(block_from(name => 'one seed', gw('gw1', 'ca.pem', $nodes[0]))) or BAIL_OUT('one seed');
my %elsewhere;
for my $t (@one) {
    my $node = primary_of(key_slot(key_of($t)));
    is(st(api($SHARED, '/api/x', $t)), '200 MISS', "$t: a miss");
    ok(wait_until(5, sub { $node->cmd('EXISTS', key_of($t)) }), "$t: written to its slot's primary");
    $elsewhere{ $node->port }++ if $node != $nodes[0];
}
ok(scalar(keys %elsewhere), 'some primaries are not the seed');
unlike(OAuth2Test::error_log_text(), qr/shared cache \(Redis\)|\[(?:alert|crit|emerg)\]/,
    'no failed call through the addresses of the map');
stop_nginx();

# 3. Another CA: no call passes the certificate check.
start_nginx(block_from(name => 'other CA', gw('gw1', 'other-ca.pem', @nodes))) or BAIL_OUT('other CA');
for my $t (@bad) {
    is(st(api($SHARED, '/api/x', $t)), '200 MISS', "$t: passes, a miss");
    is(calls_for($t), 1, "$t: went to the IdP");
}
# A server whose certificate fails counts as failed for nginx's upstream
# (max_fails=1): once each seed failed the check, calls find no server
# (connect) until fail_timeout. Either way a miss.
sub failures {
    my $m = http_request({ method => 'GET', uri => '/metrics' })->{body};
    return map { $m =~ /^oauth2_token_shared_cache_failures_total\{kind="$_"\} (\d+)$/m ? $1 : 0 } @_;
}
ok(wait_until(3, sub { my ($tls, $connect) = failures('tls', 'connect'); $tls >= 1 && $tls + $connect >= 2 * @bad }),
    'every call counted, as tls or, once the seeds failed, connect') or diag(join ' ', failures('tls', 'connect'));
is((grep { primary_of(key_slot(key_of($_)))->cmd('EXISTS', key_of($_)) } @bad), 0, 'nothing written');
my @lines = OAuth2Test::error_log_text() =~ /(shared cache \(Redis\) tls: [^\n]*)/g;
is(scalar @lines, 1, 'logged once, not per call');
like($lines[0] // '', qr/certificate/, 'saying why');
stop_nginx();

done_testing();
