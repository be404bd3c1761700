# The Shared Signals receiver's replay store across a fleet: with the
# Redis tier, a SET's jti is also recorded in Redis (SET NX PX, under a
# keyed name that hides it), so the same SET pushed to another gateway is
# refused there with RFC 8935's error (400 invalid_request), whether it
# carries revocations or only an event not acted on. The name expires
# with the replay window (max_age plus two minutes).
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

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', "ssf-replay-secret-0123456789abcdef0123456789\n");
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';

sub signed { return SsfTest::signed("$dir/t.jwk", "$dir/t.jwks", @_) }
signed();
my ($disabled, $other) = signed(
    { claims => { iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => 'secret-jti-1',
        events => { 'https://schemas.openid.net/secevent/risc/event-type/account-disabled' =>
            { subject => { format => 'iss_sub', iss => $ISS, sub => 'dave' } } } } },
    { claims => { iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => 'secret-jti-2',
        events => { 'https://example.com/event-type/not-acted-on' => {} } } },
);

sub gw {
    my ($name, $redis) = @_;
    my %s = fleet_config(name => $name, redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY);
    $s{http_config} = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys=$dir/t.jwks max_age=1m;\n" . $s{http_config};
    $s{config} .= "location = /ssf { auth_oauth2_token_shared_cache /_oauth2_redis; auth_oauth2_token_ssf_push; }\n";
    return \%s;
}
sub push_set {
    my ($port, $set) = @_;
    my $r = http_request({ method => 'POST', uri => '/ssf', port => $port,
        headers => ['Content-Type: application/secevent+jwt'], body => $set });
    return ($r->{status}, eval { decode_json($r->{body}) });
}

idp_setup({ 'tok-dave' => { json => { active => \1, sub => 'dave', iss => $ISS, iat => $NOW - 20 } } });
my $redis = redis_start() or BAIL_OUT('redis');
start_nginx(block_from(name => 'gw1', %{ gw('gw1', $redis) })) or BAIL_OUT('gateway 1');
my $GW1 = server_port();
my $gw2 = start_gateway(%{ gw('gw2', $redis) }) or BAIL_OUT('gateway 2');

for my $case (['a SET with a revocation', $disabled], ['a SET with an event not acted on', $other]) {
    my ($name, $set) = @$case;
    is((push_set($GW1, $set))[0], 202, "$name: accepted by gateway 1");
    my ($s, $j) = push_set($gw2->port, $set);
    is($s, 400, "$name: replayed to gateway 2, refused");
    is($j && $j->{err}, 'invalid_request', "$name: ... invalid_request");
    like($j && $j->{description}, qr/received before/, "$name: ... as a replay");
    is((push_set($GW1, $set))[0], 400, "$name: replayed to gateway 1, refused");
}

my @names = split /\n/, join("\n", map { ref $_ ? @$_ : $_ } $redis->cmd('KEYS', '{oauth2:ssf}j:*'));
is(scalar @names, 2, 'Redis holds one name per SET');
unlike(join(' ', @names), qr/secret-jti/, 'the names do not show the jti');
my $pttl = $redis->cmd('PTTL', $names[0]);
ok($pttl > 100_000 && $pttl <= 180_000, "the name expires with the replay window (max_age + 2 min): $pttl ms");
like($gw2->error_log, qr/SET refused: .*received before/, 'gateway 2 logs the refusal');
unlike($gw2->error_log, qr/SET accepted/, 'gateway 2 applied nothing as new');

done_testing();
