# Refresh-ahead updates the Redis tier (issue 28): a hit late in an entry's
# life is refreshed in the background, and the refreshed answer now goes to
# the Redis tier as well as to this gateway's zone; an "inactive" refresh
# removes the token's entries from Redis too. Before, only the zone was
# renewed: another gateway kept reading the old answer from Redis until it
# expired there, and a token the refresh found revoked stayed in Redis.
#   1. Gateway 1 alone: two tokens, each a MISS, then hits until each was
#      refreshed once (the IdP now says sub=refreshed for one, inactive for
#      the other). Redis: the first token's hash lives on (its TTL renewed
#      by the refresh's write), the second's is gone.
#   2. Gateway 2: the first token is a shared hit with the refreshed claims
#      and no IdP call; the second is asked at the IdP and refused.
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
my $SECRET = 'f' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub key_of { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }

my $FAR = int(time) + 3600;
OAuth2Test::idp_setup({
    'tok-r' => [{ json => { active => \1, sub => 'first', exp => $FAR } },
                { json => { active => \1, sub => 'refreshed', exp => $FAR } }],
    'tok-v' => [{ json => { active => \1, sub => 'v1', exp => $FAR } }, { json => { active => \0 } }],
});

my $redis = redis_start() or BAIL_OUT('redis');
my %fleet = (redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY,
    cache => 'max_ttl=4s refresh=50%');
start_nginx(block_from(name => 'gw1', fleet_config(%fleet, name => 'gw1'))) or BAIL_OUT('gateway 1');

sub sub_seen {
    my ($last) = reverse @{ OAuth2Test::backend_requests() };
    return (map { $_->[1] } grep { lc $_->[0] eq 'x-sub' } @{ $last->{headers} // [] })[0] // '';
}

# ---- 1. gateway 1 alone ---------------------------------------------------------
for my $t (qw(tok-r tok-v)) {
    my $r = api($SHARED, '/api/x', $t);
    is("$r->{status} $r->{cache}", '200 MISS', "$t: a miss at gateway 1");
    ok(wait_until(5, sub { $redis->try_cmd('EXISTS', key_of($t)) eq '1' }), "$t: written to Redis");
}
# Hits until each was refreshed (past 50% of its 4 s).
my %hits;
ok(wait_until(10, sub {
    for my $t (grep { calls_for($_) < 2 } qw(tok-r tok-v)) {
        my $r = api($SHARED, '/api/x', $t);
        $hits{$t}++ if $r->{status} == 200 && $r->{cache} eq 'HIT';
    }
    return calls_for('tok-r') == 2 && calls_for('tok-v') == 2;
}), 'both tokens were refreshed in the background (a second IdP call each)');
ok($hits{'tok-r'} && $hits{'tok-v'}, 'served as hits meanwhile');
ok(wait_until(5, sub { ($redis->try_cmd('PTTL', key_of('tok-r')) // 0) > 3000 }),
    "tok-r: the refresh's answer was written to Redis (its hash lives another 4 s)")
    or diag('PTTL ' . $redis->try_cmd('PTTL', key_of('tok-r')));
ok(wait_until(5, sub { $redis->try_cmd('EXISTS', key_of('tok-v')) eq '0' }),
    "tok-v: the refresh's \"inactive\" removed it from Redis");

# ---- 2. gateway 2 -----------------------------------------------------------------
my $gw2 = start_gateway(fleet_config(%fleet, name => 'gw2')) or BAIL_OUT('gateway 2');
my $r = on_gateway($SHARED, 'gw2', '/api/x', 'tok-r');
is($r && "$r->{status} $r->{cache}", '200 HIT_SHARED', 'tok-r: a shared hit at gateway 2');
is(sub_seen(), 'refreshed', 'tok-r: with the refreshed claims');
is(calls_for('tok-r'), 2, 'tok-r: no IdP call from gateway 2');
$r = on_gateway($SHARED, 'gw2', '/api/x', 'tok-v');
is($r && "$r->{status} $r->{cache}", '401 MISS', 'tok-v: gateway 2 finds nothing in Redis, asks the IdP, refuses it');
cmp_ok(calls_for('tok-v'), '>=', 3, 'tok-v: the IdP was asked again');

done_testing();
