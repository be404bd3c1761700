# Sentinel with a password (issue 28): `sentinel_password_file=` makes each
# worker send `AUTH` to the sentinels before its question. Gateway 1 has
# the right password: it learns the primary and writes there. Gateway 2
# has a wrong one: the sentinel refuses it, which is logged, and its
# requests go on to the IdP (misses, never an error). A sentinel password
# without `sentinel=` fails `nginx -t`.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Time::HiRes qw(time);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('a' x 40) . "\n");
my $RIGHT = write_secret('sentinel.pass', "sentinel-pw-1\n");
my $WRONG = write_secret('wrong.pass', "not-the-password\n");

my $primary = redis_start() or BAIL_OUT('primary');
my $sentinel = redis_start(sentinel => ['authed', $primary->port], password => 'sentinel-pw-1')
    or BAIL_OUT('sentinel');
like($sentinel->try_cmd('SENTINEL', 'get-master-addr-by-name', 'authed')->[1] // '', qr/^${\ $primary->port}$/,
    'the sentinel (with a password) knows the primary');

my $FAR = int(time) + 3600;
OAuth2Test::idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => "u$_", exp => $FAR } }) } 1 .. 20 });
my %fleet = (redis_port => 0, shared_port => $SHARED, key_file => $KEY,
    upstream_servers => 'server 127.0.0.1:' . $sentinel->port . ';');
start_nginx(block_from(name => 'gw1',
    fleet_config(%fleet, name => 'gw1', redis => "sentinel=authed sentinel_password_file=$RIGHT")))
    or BAIL_OUT('gateway 1');
my $gw2 = start_gateway(fleet_config(%fleet, name => 'gw2', redis => "sentinel=authed sentinel_password_file=$WRONG"))
    or BAIL_OUT('gateway 2');

ok(wait_until(10, sub { OAuth2Test::error_log_text() =~ /primary is 127\.0\.0\.1:${\ $primary->port}/ }),
    'gateway 1 authenticates and learns the primary') or diag(OAuth2Test::error_log_text());
ok(wait_until(10, sub { $gw2->error_log =~ /sentinel 1 of the upstream could not tell the primary: AUTH refused: -WRONGPASS/ }),
    'gateway 2 is refused, and says so') or diag($gw2->error_log);
unlike($gw2->error_log, qr/primary is/, 'gateway 2 learnt no primary');
unlike($gw2->error_log . OAuth2Test::error_log_text(), qr/sentinel-pw-1|not-the-password/, 'no password in the logs');

my $r = on_gateway($SHARED, 'gw1', '/api/x', 'tok-1');
is($r && $r->{status}, 200, 'gateway 1 answers');
ok(wait_until(5, sub { scalar($primary->keys('oauth2:t:*')) >= 1 }), 'and writes to the primary');
$r = on_gateway($SHARED, 'gw2', '/api/x', 'tok-2');
is($r && "$r->{status} $r->{cache}", '200 MISS', 'gateway 2 answers too: a miss, from the IdP');

# nginx -t
my %bad = fleet_config(%fleet, name => 'bad', redis => "sentinel_password_file=$RIGHT");
my $gw3 = new_gateway(%bad);
OAuth2Test::spew("$gw3->{prefix}/nginx.conf", $gw3->conf_text);
my ($rc, $out) = OAuth2Test::run_command($gw3->argv('-t'));
isnt($rc, 0, 'nginx -t fails for sentinel_password_file= without sentinel=');
like($out, qr/"auth_oauth2_token_redis".*sentinel_password_file=.*without.*sentinel=/, 'naming the directive');

done_testing();
