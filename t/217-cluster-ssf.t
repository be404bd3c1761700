# Revocation pushed by the IdP across a fleet on a Redis Cluster (issues 26
# and 28): the list `{oauth2:ssf}` and the SETs' jti names
# `{oauth2:ssf}j:...` share a hash tag, so a push's one pipeline (ZADD,
# PUBLISH, the jti's SET NX) goes to one node, and each gateway's revocation
# channel reads the list from that node: its first connection goes to a node
# that does not hold the slot (the upstream's first server), whose -MOVED it
# follows. Three primaries (redis-cli --cluster create), three gateways.
#   1. A SET pushed to gateway 1: gateway 2 refuses alice's cached token
#      (told through the channel: PUBLISH reaches every node), bob passes.
#   2. The list and the jti's name live on the slot's primary.
#   3. The same SET pushed to gateway 2: a replay, refused.
#   4. Gateway 3, started after the event, refuses alice from the list it
#      read at start, through -MOVED.
#   5. The list's slot being migrated (its names moved): gateway 4 reads the
#      list through -MOVED, then -ASK (with ASKING), and refuses alice.
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
use List::Util ();

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', "ssf-cluster-secret-0123456789abcdef0123456789\n");
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';

sub signed { return SsfTest::signed("$dir/t.jwk", "$dir/t.jwks", @_) }
my ($alice_set) = signed({ claims => { iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => 'cluster-1',
    events => { 'https://schemas.openid.net/secevent/risc/event-type/account-disabled' =>
        { subject => { format => 'iss_sub', iss => $ISS, sub => 'alice' } } } } });

my @nodes = redis_cluster(primaries => 3, replicas => 0) or BAIL_OUT('cluster');
my %by_port = map { ($_->port => $_) } @nodes;
my $LIST = '{oauth2:ssf}';
my $SLOT = key_slot($LIST);
my ($range) = grep { $_->[0] <= $SLOT && $SLOT <= $_->[1] } map { cluster_slots($_) } $nodes[0];
my $owner = $by_port{ $range->[2] } or BAIL_OUT('the list slot\'s primary');
my @others = grep { $_ != $owner } @nodes;
note("the list's slot $SLOT is on " . $owner->port);

# The list's primary is the upstream's last server: each channel's first
# connection goes to another node.
my $servers = join ' ', map { 'server 127.0.0.1:' . $_->port . ';' } @others, $owner;
sub gw {
    my ($name) = @_;
    my %s = fleet_config(name => $name, redis_port => 0, shared_port => $SHARED, key_file => $KEY,
        redis => 'cluster', upstream_servers => $servers, cache => 'max_ttl=300s');
    $s{http_config} = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD keys=$dir/t.jwks;\n"
        . $s{http_config};
    $s{config} .= "location = /ssf { auth_oauth2_token_shared_cache /_oauth2_redis; auth_oauth2_token_ssf_push; }\n";
    return \%s;
}
sub push_set {
    my ($port, $set) = @_;
    my $r = http_request({ method => 'POST', uri => '/ssf', port => $port,
        headers => ['Content-Type: application/secevent+jwt'], body => $set });
    return ($r->{status}, eval { decode_json($r->{body}) });
}
sub st { my ($r) = @_; return $r ? $r->{status} : 'no answer' }
sub subscribed { List::Util::sum(map { $_->numsub('oauth2:purge') // 0 } @nodes) }
# ZRANGEs a node redirected (-MOVED counts as a rejected call), and ran.
sub zrange_stat {
    my ($node, $what) = @_;
    my $st = $node->cmd('INFO', 'commandstats');
    return $st =~ /^cmdstat_zrange:.*\b$what=(\d+)/m ? $1 : 0;
}

idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20,
    exp => $NOW + 3600 } }) } qw(alice bob) });

start_nginx(block_from(name => 'gw1', %{ gw('gw1') })) or BAIL_OUT('gateway 1');
my $GW1 = server_port();
my $gw2 = start_gateway(%{ gw('gw2') }) or BAIL_OUT('gateway 2');
ok(wait_until(10, sub { subscribed() >= 2 }), 'both gateways subscribed to the channel');
ok(wait_until(5, sub { zrange_stat($owner, 'calls') >= 2 }), 'both read the list on its slot\'s primary');
is(List::Util::sum(map { zrange_stat($_, 'calls') } @others), 0, 'no other node served the list');
cmp_ok(List::Util::sum(map { zrange_stat($_, 'rejected_calls') } @others), '>=', 2,
    'their first reads went elsewhere and were redirected');
unlike(OAuth2Test::error_log_text() . $gw2->error_log, qr/revocation channel down/, 'no channel failure logged');

for my $t (qw(tok-alice tok-bob)) {
    is(st(on_gateway($SHARED, 'gw1', '/api/a', $t)), 200, "before: $t passes on gateway 1");
    is(st(on_gateway($SHARED, 'gw2', '/api/a', $t)), 200, "before: $t passes on gateway 2");
}
my $hit = on_gateway($SHARED, 'gw2', '/api/a', 'tok-alice');
is($hit && $hit->{cache}, 'HIT', 'alice\'s token is in gateway 2\'s cache');

# 1. Pushed to gateway 1, refused on gateway 2.
is((push_set($GW1, $alice_set))[0], 202, 'account-disabled for alice pushed to gateway 1: 202');
ok(wait_until(5, sub { st(on_gateway($SHARED, 'gw2', '/api/a', 'tok-alice')) eq '401' }),
    'gateway 2 refuses alice\'s cached token once the channel told it');
is(st(on_gateway($SHARED, 'gw1', '/api/a', 'tok-alice')), 401, 'gateway 1 refuses alice\'s token');
is(st(on_gateway($SHARED, 'gw2', '/api/a', 'tok-bob')), 200, 'gateway 2 still passes bob\'s token');
like($gw2->error_log, qr/token revoked by a Shared Signals event/, 'gateway 2 logs the refusal');

# 2. One slot: the list and the jti's name on its primary.
cmp_ok($owner->cmd('ZCARD', $LIST), '>=', 1, 'the list is on its slot\'s primary');
my @names = map { ref $_ ? @$_ : $_ } $owner->cmd('KEYS', "${LIST}j:*");
is(scalar @names, 1, 'the SET\'s jti name is there too');
is(key_slot($names[0] // ''), $SLOT, '... in the list\'s slot');
unlike(OAuth2Test::error_log_text(), qr/Redis tier was not told|shared cache \(Redis\)/, 'gateway 1 told the fleet');

# 3. The same SET at gateway 2: a replay.
my ($status, $json) = push_set($gw2->port, $alice_set);
is($status, 400, 'the SET replayed to gateway 2 is refused');
like($json && $json->{description}, qr/received before/, '... as a replay');

# 4. A gateway started after the event reads the list, through -MOVED.
my $rejected = List::Util::sum(map { zrange_stat($_, 'rejected_calls') } @others);
my $gw3 = start_gateway(%{ gw('gw3') }) or BAIL_OUT('gateway 3');
ok(wait_until(10, sub { subscribed() >= 3 }), 'gateway 3 subscribed');
cmp_ok(List::Util::sum(map { zrange_stat($_, 'rejected_calls') } @others), '>', $rejected,
    'its first read of the list was redirected');
is(st(on_gateway($SHARED, 'gw3', '/api/a', 'tok-alice')), 401,
    'gateway 3, started after the event, refuses alice\'s token (the list it read at start)');
is(st(on_gateway($SHARED, 'gw3', '/api/a', 'tok-bob')), 200, 'gateway 3 passes bob\'s token');
unlike($gw3->error_log, qr/revocation channel down/, 'gateway 3 logged no channel failure');

# 5. The list's slot being migrated, its names already moved: a gateway
# started now is sent on by -MOVED, then by -ASK (ASKING first).
my $to = $others[0];
my ($id_from, $id_to) = map { $_->cmd('CLUSTER', 'MYID') } $owner, $to;
is($to->cmd('CLUSTER', 'SETSLOT', $SLOT, 'IMPORTING', $id_from), 'OK', 'another primary imports the list\'s slot');
is($owner->cmd('CLUSTER', 'SETSLOT', $SLOT, 'MIGRATING', $id_to), 'OK', 'its primary migrates it');
my @moving = map { ref $_ ? @$_ : $_ } $owner->cmd('KEYS', "${LIST}*");
cmp_ok(scalar @moving, '>=', 2, 'the list and the jti name');
is($owner->cmd('MIGRATE', '127.0.0.1', $to->port, '', 0, 5000, 'KEYS', @moving), 'OK', 'MIGRATE moves them');
my $asked = zrange_stat($to, 'calls');
my $gw4 = start_gateway(%{ gw('gw4') }) or BAIL_OUT('gateway 4');
ok(wait_until(10, sub { subscribed() >= 4 }), 'gateway 4 subscribed');
ok(wait_until(5, sub { zrange_stat($to, 'calls') > $asked }), 'it read the list at the importing node');
like($to->cmd('INFO', 'commandstats'), qr/^cmdstat_asking:calls=[1-9]/m, '... after ASKING');
is(st(on_gateway($SHARED, 'gw4', '/api/a', 'tok-alice')), 401, 'gateway 4 refuses alice\'s token');
is(st(on_gateway($SHARED, 'gw4', '/api/a', 'tok-bob')), 200, 'gateway 4 passes bob\'s token');
unlike($gw4->error_log, qr/revocation channel down/, 'gateway 4 logged no channel failure');

done_testing();
