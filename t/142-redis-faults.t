# The shared tier failing (issue #13): Redis stopped mid-run, slow past the
# read timeout (DEBUG SLEEP), a wrong or missing password, a server that
# answers garbage, -OOM and -READONLY on writes. Every client request gets
# the IdP's verdict (200 active, 401 inactive), never a 5xx; the error log has
# one line for the kind of failure, not one per request; once Redis is back
# the shared tier is used again without a reload.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', ('f' x 48) . "\n");
my $N = 20;    # requests per fault

sub gw {
    my ($name, $port, %o) = @_;
    return block_from(name => $name,
        fleet_config(name => $name, redis_port => $port, shared_port => $SHARED, key_file => $KEY, %o));
}

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

# $N new tokens (half active, half inactive), so that each request misses
# the zone and goes to Redis; all at once when $concurrent.
my $round = 0;
sub storm {
    my ($label, %o) = @_;
    $round++;
    my @tokens = map { ($_ % 2 ? 'a' : 'd') . "$round-$_" } 1 .. $N;
    idp_setup({ map { $_ => /^a/ ? { json => { active => \1, sub => 'x' } } : { json => { active => \0 } } } @tokens });
    my @reqs = map { { method => 'GET', uri => '/api/a', port => $SHARED, headers => ["Authorization: Bearer $_"],
        timeout => 10 } } @tokens;
    my $start = time;
    my @r = $o{concurrent} ? http_requests(\@reqs) : map { http_request($_) } @reqs;
    my $took = time - $start;
    my @bad = grep { $r[$_]{status} != ($tokens[$_] =~ /^a/ ? 200 : 401) } 0 .. $#r;
    is(scalar @bad, 0, "$label: all $N requests got the IdP's verdict (200 active, 401 inactive)")
        or diag(join "\n", map { "$tokens[$_]: $r[$_]{status} " . ($r[$_]{error} // '') . " $r[$_]{body}" } @bad[0 .. ($#bad > 4 ? 4 : $#bad)]);
    is(scalar(grep { $_->{status} >= 500 } @r), 0, "$label: no 5xx");
    is(scalar @{ idp_requests() }, $N, "$label: each token asked the IdP once");
    return ($took, \@r);
}

# Exactly one line of this kind (waits up to 1 s for it), none per request.
sub one_line {
    my ($label, $kind, $text_of) = @_;
    $text_of //= \&error_log_text;
    my $re = qr/shared cache \(Redis\) \Q$kind\E/;
    wait_until(1, sub { $text_of->() =~ $re });
    my $n = () = $text_of->() =~ /$re/g;
    is($n, 1, "$label: the error log has one '$kind' line for $N requests") or diag($text_of->());
    # nginx's own lines about the Redis connection are at info; its timers
    # are a backstop behind the module's deadline, so no "upstream timed out".
    my $own = () = $text_of->() =~ /\[(?:error|warn|crit)\][^\n]*(?:connect\(\) (?:to \S+ )?failed|recv\(\) failed|send\(\) failed|upstream timed out)/g;
    ok($own <= 1, "$label: nginx's own lines about the Redis connection: $own, not one per request")
        or diag($text_of->());
    unlike($text_of->(), qr/\[(?:crit|alert|emerg)\]/, "$label: nothing worse than error");
}

# ---- 1. Redis stopped mid-run, then restarted: used again without a reload -------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    start_nginx(gw('gw1', $redis->port)) or BAIL_OUT('gateway 1');
    my $gw2 = start_gateway(%{ gw('gw2', $redis->port) }) or BAIL_OUT('gateway 2');
    ok($redis->wait_numsub('oauth2:purge', 2), 'stopped: both gateways subscribed');
    idp_setup({ before => { json => { active => \1 } } });
    is(st(api($SHARED, '/api/a', 'before')), '200 MISS', 'stopped: the tier works before');
    ok(wait_until(3, sub { scalar $redis->keys }), 'stopped: the entry reached Redis');

    $redis->stop;
    my ($took) = storm('stopped');
    my $both = sub { error_log_text() . $gw2->error_log };
    my $re = qr/shared cache \(Redis\) connect/;
    wait_until(1, sub { $both->() =~ $re });
    my $lines = () = $both->() =~ /$re/g;
    ok($lines >= 1 && $lines <= 2, "stopped: 'connect' logged once per gateway at most ($lines lines for $N requests)")
        or diag($both->());
    like($both->(), qr/revocation channel down/, 'stopped: the subscription loss is logged');

    ok($redis->restart, 'restarted: Redis is back (empty)');
    # Keepalive connections to the old server are dead; a request may meet
    # one. Each try is a new token, until gateway 1 stores one in Redis.
    my $stored;
    my $deadline = time + 5;
    my $i = 0;
    while (!$stored && time < $deadline) {
        my $t = 'after-' . ++$i;
        idp_setup({ $t => { json => { active => \1 } } });
        my $r = api($SHARED, '/api/a', $t);
        $stored = $r if wait_until(0.5, sub { scalar $redis->keys });
    }
    ok($stored, "restarted: a gateway writes to Redis again without a reload (after $i token(s))");
    if ($stored) {
        my $other = $stored->{gw} eq 'gw1' ? 'gw2' : 'gw1';
        my $t = "after-$i";
        is(st(on_gateway($SHARED, $other, '/api/a', $t)), '200 HIT_SHARED',
            "restarted: the other gateway ($other) reads it from Redis again");
        is(calls_for($t), 1, 'restarted: with no second IdP call');
    }
    ok($redis->wait_numsub('oauth2:purge', 2, 8), 'restarted: both gateways subscribed again')
        or diag('subscribers: ' . $redis->numsub('oauth2:purge'));
    $gw2->stop;
    stop_nginx();
    $redis->stop;
}

# ---- 2. slow: DEBUG SLEEP 2 with a read timeout of 200ms ------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $b = gw('slow', $redis->port, redis_location => 'auth_oauth2_token_redis_read_timeout 200ms;');
    $b->{config} .= "location = /metrics { auth_oauth2_token_metrics; }\n";
    start_nginx($b) or BAIL_OUT('nginx');
    $redis->sleep_in_background(2);
    storm('slow', concurrent => 1);
    # Each read ended at the deadline: counted as a timeout, not answered
    # late by a Redis that woke up (no timing in the test).
    my $m = http_request({ method => 'GET', uri => '/metrics' });
    my ($timeouts) = $m->{body} =~ /^oauth2_token_shared_cache_failures_total\{kind="timeout"\} (\d+)$/m;
    ok(defined $timeouts && $timeouts >= $N, "slow: every read of the $N requests timed out (" . ($timeouts // 'none') . ')')
        or diag($m->{body});
    one_line('slow', 'timeout');
    $redis->wait_sleep;
    idp_setup({ later => { json => { active => \1 } } });
    is(st(api($SHARED, '/api/a', 'later')), '200 MISS', 'slow: after the sleep');
    ok(wait_until(3, sub { grep { 1 } $redis->keys }), 'slow: Redis is written again');
    stop_nginx();
    $redis->stop;
}

# ---- 3. wrong and missing password -----------------------------------------------------
{
    my $redis = redis_start(password => 'right-pw') or BAIL_OUT('redis');
    my $wrong = write_secret('wrong.pw', "wrong-pw\n");
    start_nginx(gw('wrongpass', $redis->port, redis => "password_file=$wrong")) or BAIL_OUT('nginx');
    storm('wrong password');
    one_line('wrong password', 'error reply: -WRONGPASS');
    unlike(error_log_text(), qr/wrong-pw|right-pw/, 'wrong password: no password in the log');
    is(scalar($redis->keys), 0, 'wrong password: nothing written');
    stop_nginx();

    start_nginx(gw('nopass', $redis->port)) or BAIL_OUT('nginx');
    storm('no password');
    one_line('no password', 'error reply: -NOAUTH');
    stop_nginx();
    $redis->stop;
}

# ---- 4. a server that answers garbage ----------------------------------------------------
{
    my $junk = garbage_server();
    start_nginx(gw('garbage', $junk->port)) or BAIL_OUT('nginx');
    storm('garbage');
    one_line('garbage', 'protocol');
    cmp_ok($junk->connections, '>=', 1, 'garbage: the module did connect to it');
    stop_nginx();
    $junk->stop;
}

# ---- 5. -OOM and -READONLY on writes ---------------------------------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    $redis->config_set('maxmemory-policy', 'noeviction');
    $redis->config_set('maxmemory', 1);
    like(($redis->cmd('HSET', 'probe', 'f', 'v') // {})->{error} // '', qr/^OOM/, 'oom: Redis refuses writes');
    start_nginx(gw('oom', $redis->port)) or BAIL_OUT('nginx');
    storm('oom');
    one_line('oom', 'error reply: -OOM');
    stop_nginx();
    $redis->config_set('maxmemory', 0);

    # A replica refuses writes with -READONLY (its primary need not exist).
    $redis->cmd('REPLICAOF', '127.0.0.1', closed_port());
    like(($redis->cmd('HSET', 'probe', 'f', 'v') // {})->{error} // '', qr/^READONLY/, 'readonly: Redis refuses writes');
    start_nginx(gw('readonly', $redis->port)) or BAIL_OUT('nginx');
    storm('readonly');
    one_line('readonly', 'error reply: -READONLY');
    stop_nginx();
    $redis->cmd('REPLICAOF', 'NO', 'ONE');
    $redis->stop;
}

# ---- 6. a refused connection from the start (nothing listens) ----------------------------
{
    my $b = gw('refused', closed_port());
    $b->{config} .= "location = /metrics { auth_oauth2_token_metrics; }\n";
    start_nginx($b) or BAIL_OUT('nginx');
    storm('refused', concurrent => 1);
    one_line('refused', 'connect');
    # Every failed call is counted (reads, and the writes of active answers).
    my $m = http_request({ method => 'GET', uri => '/metrics' });
    my ($connect) = $m->{body} =~ /^oauth2_token_shared_cache_failures_total\{kind="connect"\} (\d+)$/m;
    ok(defined $connect && $connect >= $N, "refused: the metrics count the connect failures (" . ($connect // 'none') . ")")
        or diag($m->{body});
    like($m->{body}, qr/^oauth2_token_shared_cache_failures_total\{kind="timeout"\} 0$/m, 'refused: and no timeouts');
    stop_nginx();
}

# ---- 7. failover: the upstream's first server refuses, the second is Redis ---------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $servers = join ' ', map { "server 127.0.0.1:$_;" } closed_port(), $redis->port;
    start_nginx(gw('failover', $redis->port, upstream_servers => $servers)) or BAIL_OUT('nginx');
    my (undef, $r) = storm('failover');
    ok(wait_until(3, sub { scalar($redis->keys) >= $N / 2 }), 'failover: the answers reached the second server');
    stop_nginx();
    idp_reset();
    my $gw = start_gateway(%{ gw('failover2', $redis->port, upstream_servers => $servers) }) or BAIL_OUT('gateway');
    my @active = grep { /^a/ } map { "a$round-$_" } grep { $_ % 2 } 1 .. $N;
    my @answers = map { api($SHARED, '/api/a', $_) } @active;
    is(scalar(grep { "$_->{status} $_->{cache}" eq '200 HIT_SHARED' } @answers), scalar @active,
        'failover: another gateway finds every active answer on the second server');
    is(scalar @{ idp_requests() }, 0, 'failover: with no IdP call');
    $gw->stop;
    $redis->stop;
}

# ---- 8. failover on the module's deadline: the first server accepts and never answers ------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 128, ReuseAddr => 1)
        or BAIL_OUT("silent server: $!");
    my $servers = join ' ', map { "server 127.0.0.1:$_;" } $silent->sockport, $redis->port;
    start_nginx(gw('deadline', $redis->port, upstream_servers => $servers,
        redis_location => 'auth_oauth2_token_redis_read_timeout 200ms; auth_oauth2_token_redis_next_upstream timeout;'))
        or BAIL_OUT('nginx');
    storm('deadline', concurrent => 1);
    # Reads and writes that went to the silent server first moved on to Redis
    # after their deadline (`next_upstream timeout` alone): every active
    # answer is there.
    ok(wait_until(3, sub { scalar($redis->keys) == $N / 2 }), 'deadline: every active answer reached Redis')
        or diag(scalar($redis->keys) . ' keys');
    my $own = () = error_log_text() =~ /\[(?:error|warn|crit)\][^\n]*upstream timed out/g;
    is($own, 0, 'deadline: no "upstream timed out" line from nginx');
    stop_nginx();
    close $silent;
    $redis->stop;
}

done_testing();
