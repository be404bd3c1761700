# nginx-conf/fleet.conf, the complete fleet example (issue #13): it passes
# `nginx -t`, t/040-examples.t covers it, and it runs as it is (ports and
# paths swapped for the test's) against Redis with the ACL user it documents:
# a token introspected once, then served from the zone, purged. Then the
# configuration mistakes of the shared tier, each failing `nginx -t` naming
# the directive.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use Cwd qw(abs_path);

start_servers();
my $NGINX = abs_path($ENV{TEST_NGINX_BINARY} || 'objs/nginx');
my $MODULE = abs_path($ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so');

my $example = OAuth2Test::slurp('nginx-conf/fleet.conf');
ok(length $example, 'nginx-conf/fleet.conf exists');
ok(scalar(grep { $_ eq 'nginx-conf/fleet.conf' } glob('nginx-conf/*.conf')), 't/040-examples.t globs it');
like(OAuth2Test::slurp('t/040-examples.t'), qr/fleet\.key/, 't/040-examples.t provides its key file');
for my $d (qw(auth_oauth2_token_redis auth_oauth2_token_redis_pass auth_oauth2_token_shared_cache
    auth_oauth2_token_purge keepalive key_file= password_file= user=))
{
    like($example, qr/\Q$d\E/, "fleet.conf shows $d");
}

sub secrets {
    my ($prefix, $password) = @_;
    make_path("$prefix/logs", "$prefix/secrets");
    OAuth2Test::spew("$prefix/secrets/idp-client-secret", "example-secret\n");
    OAuth2Test::spew("$prefix/secrets/fleet.key", ('0123456789abcdef' x 4) . "\n");
    OAuth2Test::spew("$prefix/secrets/redis-password", "$password\n");
}

# 1. nginx -t, as t/040-examples.t runs it.
{
    my $prefix = tempdir(CLEANUP => 1);
    secrets($prefix, 'pw');
    (my $conf = $example) =~ s{^load_module \S+;}{load_module $MODULE;}m;
    OAuth2Test::spew("$prefix/nginx.conf", $conf);
    my ($rc, $out) = OAuth2Test::run_command($NGINX, '-t', '-p', "$prefix/", '-c', 'nginx.conf');
    is($rc, 0, 'nginx -t accepts nginx-conf/fleet.conf') or diag($out);
}

# 2. It runs: the example's ports become the test's, Redis has the ACL user
#    of its comment.
{
    my ($rules) = $example =~ /ACL SETUSER gateway on >PASSWORD (.*?)\n\s*#\s+(.*?)\n/s
        ? ("$1 $2") : ('');
    ok($rules, "fleet.conf documents the ACL user's rules");
    my $redis = redis_start(user => ['gateway', 'fleet-redis-pw', $rules]) or BAIL_OUT('redis');
    my $g = new_gateway(name => 'fleet.conf');
    secrets($g->prefix, 'fleet-redis-pw');
    my $conf = $example;
    $conf =~ s{^load_module \S+;}{load_module $MODULE;}m;
    $conf =~ s{127\.0\.0\.1:9001}{'127.0.0.1:' . idp_port()}ge;
    $conf =~ s{127\.0\.0\.1:9002}{'127.0.0.1:' . backend_port()}ge;
    $conf =~ s{127\.0\.0\.1:6379}{'127.0.0.1:' . $redis->port}ge;
    $conf =~ s{listen 8080;}{'listen 127.0.0.1:' . $g->port . ';'}ge;
    $conf =~ s{error_log logs/error.log notice;}{error_log logs/error.log info;};
    $g->{sections}{conf} = $conf;
    ok($g->start, 'fleet.conf starts');
    idp_setup({ tok => { json => { active => \1, sub => 'alice' } } });
    my $get = sub { http_request({ method => 'GET', uri => '/api/x', port => $g->port,
        headers => ['Host: api.example.com', 'Authorization: Bearer tok'] })->{status} };
    is($get->(), 200, 'fleet.conf: an active token passes');
    ok(wait_until(3, sub { scalar $redis->keys }), 'fleet.conf: the answer is in Redis (the ACL user may write)');
    is($get->(), 200, 'fleet.conf: again');
    is(calls_for('tok'), 1, 'fleet.conf: one IdP call');
    ok($redis->wait_numsub('oauth2:purge', 1), 'fleet.conf: subscribed to oauth2:purge');
    my $r = http_request({ method => 'POST', uri => '/oauth2/purge', port => $g->port,
        headers => ['Host: api.example.com', 'Content-Type: application/x-www-form-urlencoded'], body => 'token=tok' });
    is($r->{status}, 200, 'fleet.conf: purge');
    is(scalar($redis->keys), 0, 'fleet.conf: Redis no longer has the token');
    is($get->(), 200, 'fleet.conf: after the purge');
    is(calls_for('tok'), 2, 'fleet.conf: the IdP was asked again');
    my $denied = $redis->cmd('ACL', 'LOG');
    is(ref $denied eq 'ARRAY' ? scalar @$denied : -1, 0, 'fleet.conf: Redis refused no command of the module')
        or diag(explain($denied));
    unlike($g->error_log, qr/shared cache \(Redis\)|\[(?:crit|alert|emerg)\]/, 'fleet.conf: no failure logged')
        or diag($g->error_log);
    $g->stop;
    $redis->stop;
}

# 3. Configuration mistakes.
my $redis_loc = 'location = /_r { internal; auth_oauth2_token_redis_pass; }';
run_tests(default_config => $redis_loc);

__DATA__

=== TEST 1: a short fleet secret (31 bytes) fails naming the directive, not the secret
--- user_files
>>> short.key
ABCDEFGHIJKLMNOPQRSTUVWXYZ01234
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/short.key;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*key_file.*31 bytes.*32/
--- no_error_log
ABCDEFGHIJKLMNOPQRSTUVWXYZ01234

=== TEST 2: a short old_key_file fails too
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
>>> old.key
short
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key old_key_file=$TEST_NGINX_PREFIX/old.key;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*old_key_file/

=== TEST 3: 32 bytes (trailing whitespace trimmed) are enough
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef   

--- http_config
auth_oauth2_token_redis 127.0.0.1:$TEST_NGINX_CLOSED_PORT key_file=$TEST_NGINX_PREFIX/good.key;
--- request
GET /_r
--- error_code: 404

=== TEST 4: no key_file fails naming the directive
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*key_file/

=== TEST 5: a key_file that does not exist fails naming the directive and the file
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=/nonexistent/fleet.key;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*\/nonexistent\/fleet\.key/

=== TEST 6: an unknown parameter fails naming it
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key colour=red;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*colour/

=== TEST 7: a bad database number fails
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key database=x;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*database/

=== TEST 8: user= without password_file= fails
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key user=gw;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*password_file/

=== TEST 9: a password_file that does not exist fails
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key password_file=/nonexistent/pw;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*\/nonexistent\/pw/

=== TEST 10: auth_oauth2_token_redis is for the http block only
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key;
--- must_die
--- error_log
/"auth_oauth2_token_redis" directive is not allowed here/

=== TEST 11: shared_cache without auth_oauth2_token_redis fails naming both
--- http_config
auth_oauth2_token_introspect_cache zone=tokens:1m;
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_i;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_shared_cache /_r;
}
location = /_i { internal; proxy_pass http://idp/introspect; }
--- must_die
--- error_log
/auth_oauth2_token_shared_cache.*auth_oauth2_token_redis/

=== TEST 12: redis_pass without auth_oauth2_token_redis fails naming both
--- config
location = /_r { internal; auth_oauth2_token_redis_pass; }
--- must_die
--- error_log
"auth_oauth2_token_redis_pass" needs "auth_oauth2_token_redis" in the http block

=== TEST 13: bad Redis location values fail naming the directive
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key;
--- config
location = /_r { internal; auth_oauth2_token_redis_pass; auth_oauth2_token_redis_read_timeout 0; }
--- must_die
--- error_log
/"auth_oauth2_token_redis_read_timeout"/

=== TEST 14: next_upstream takes error, timeout or off
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key;
--- config
location = /_r { internal; auth_oauth2_token_redis_pass; auth_oauth2_token_redis_next_upstream http_500; }
--- must_die
--- error_log
/"auth_oauth2_token_redis_next_upstream".*http_500/

=== TEST 15: buffer_size too small fails
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key;
--- config
location = /_r { internal; auth_oauth2_token_redis_pass; auth_oauth2_token_redis_buffer_size 10; }
--- must_die
--- error_log
/"auth_oauth2_token_redis_buffer_size"/

=== TEST 16: auth_oauth2_token_purge takes no argument and lives in a location
--- config
location = /p { auth_oauth2_token_purge on; }
--- must_die
--- error_log
/invalid number of arguments in "auth_oauth2_token_purge"/

=== TEST 17: auth_oauth2_token_redis twice fails
--- user_files
>>> good.key
0123456789abcdef0123456789abcdef
--- http_config
auth_oauth2_token_redis 127.0.0.1:6379 key_file=$TEST_NGINX_PREFIX/good.key;
auth_oauth2_token_redis 127.0.0.1:6380 key_file=$TEST_NGINX_PREFIX/good.key;
--- must_die
--- error_log
/"auth_oauth2_token_redis".*duplicate/
