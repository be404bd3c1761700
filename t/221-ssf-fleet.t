# Revocation pushed by the IdP, across a fleet: the transmitter pushes a
# SET to one gateway, which puts the revocation on its own list and
# publishes it, sealed, on the Redis tier's channel; the other gateway's
# subscriber puts it on its list, so alice's cached token is refused there
# too within a few seconds while bob's passes. With the Redis tier down the
# push gets a 503 (applied here, the fleet not told) and its jti is not
# recorded: the transmitter's retry is accepted once Redis is back. A
# gateway started after the events reads them from the Redis tier's list.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use Time::HiRes ();

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', "ssf-fleet-secret-0123456789abcdef0123456789\n");
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';

sub signed { return SsfTest::signed("$dir/t.jwk", "$dir/t.jwks", @_) }
signed();
my $n = 0;
sub disabled {
    my ($who) = @_;
    my ($set) = signed({ claims => { iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => 'fleet-' . ++$n,
        events => { 'https://schemas.openid.net/secevent/risc/event-type/account-disabled' =>
            { subject => { format => 'iss_sub', iss => $ISS, sub => $who } } } } });
    return $set;
}

sub gw {
    my ($name, $redis) = @_;
    my %s = fleet_config(name => $name, redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY,
        cache => 'max_ttl=300s');
    $s{http_config} = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD keys=$dir/t.jwks;\n"
        . $s{http_config};
    $s{config} .= "location = /ssf { auth_oauth2_token_shared_cache /_oauth2_redis; auth_oauth2_token_ssf_push; }\n";
    return \%s;
}

sub push_set {
    my ($port, $set) = @_;
    return http_request({ method => 'POST', uri => '/ssf', port => $port,
        headers => ['Content-Type: application/secevent+jwt'], body => $set })->{status};
}
sub st { my ($r) = @_; return $r ? $r->{status} : 'no answer' }

my %tokens = map { ("tok-$_" => { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20,
    exp => $NOW + 3600 } }) } qw(alice bob carol);
idp_setup(\%tokens);

my $redis = redis_start() or BAIL_OUT('redis');
start_nginx(block_from(name => 'gw1', %{ gw('gw1', $redis) })) or BAIL_OUT('gateway 1');
my $GW1 = server_port();
my $gw2 = start_gateway(%{ gw('gw2', $redis) }) or BAIL_OUT('gateway 2');
ok($redis->wait_numsub('oauth2:purge', 2), 'both gateways subscribed to the channel');
for my $t (qw(tok-alice tok-bob tok-carol)) {
    is(st(on_gateway($SHARED, 'gw1', '/api/a', $t)), 200, "before: $t passes on gateway 1");
    is(st(on_gateway($SHARED, 'gw2', '/api/a', $t)), 200, "before: $t passes on gateway 2");
}

# 1. Pushed to gateway 1: refused on both (the time from the push to gateway
# 2's first refusal is printed, never judged).
my $alice = disabled('alice');
my $pushed_at = Time::HiRes::time();
is(push_set($GW1, $alice), 202, 'account-disabled for alice pushed to gateway 1: 202');
ok(wait_until(5, sub { st(on_gateway($SHARED, 'gw2', '/api/a', 'tok-alice')) eq '401' }),
    'gateway 2 refuses alice\'s cached token once the channel told it');
note(sprintf('time to revoke on gateway 2: %.1f ms after the push began', 1000 * (Time::HiRes::time() - $pushed_at)));
is(st(on_gateway($SHARED, 'gw1', '/api/a', 'tok-alice')), 401, 'gateway 1 refuses alice\'s token');
is(st(on_gateway($SHARED, 'gw2', '/api/a', 'tok-bob')), 200, 'gateway 2 still passes bob\'s token');
like($gw2->error_log, qr/token revoked by a Shared Signals event/, 'gateway 2 logs the refusal');

# 2. Redis down: 503, applied here, the jti not recorded; the retry passes.
my $carol = disabled('carol');
$redis->stop;
is(push_set($GW1, $carol), 503, 'with the Redis tier down the push is a 503');
is(st(on_gateway($SHARED, 'gw1', '/api/a', 'tok-carol')), 401, 'gateway 1 applied it anyway');
$redis->restart or BAIL_OUT('redis again');
ok($redis->wait_numsub('oauth2:purge', 2, 15), 'both gateways subscribed again');
is(push_set($GW1, $carol), 202, 'the transmitter\'s retry is accepted, not a replay');
ok(wait_until(5, sub { st(on_gateway($SHARED, 'gw2', '/api/a', 'tok-carol')) eq '401' }),
    'gateway 2 refuses carol\'s token after the retry');
is(push_set($GW1, $carol), 400, 'a third delivery is a replay');

# 3. A gateway started after the events reads the list from Redis.
my $gw3 = start_gateway(%{ gw('gw3', $redis) }) or BAIL_OUT('gateway 3');
ok($redis->wait_numsub('oauth2:purge', 3), 'gateway 3 subscribed');
is(st(on_gateway($SHARED, 'gw3', '/api/a', 'tok-carol')), 401,
    'gateway 3, started after the event, refuses carol\'s token (read from Redis)');
is(st(on_gateway($SHARED, 'gw3', '/api/a', 'tok-bob')), 200, 'gateway 3 passes bob\'s token');
my $members = $redis->cmd('ZCARD', '{oauth2:ssf}');
# carol's event: two revocations (at her issuer and at none), written by
# each delivery that reached Redis (the retry, and the replay refused after).
is($members, 4, 'Redis holds the sealed revocations of the deliveries that reached it');
ok($redis->cmd('PTTL', '{oauth2:ssf}') > 0, 'the list in Redis expires with its last revocation');

done_testing();
