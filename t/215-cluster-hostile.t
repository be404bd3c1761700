# Redis Cluster with hostile nodes (issue 28): whatever a "node" answers —
# a slot map out of shape, redirections in a loop, to addresses that are no
# node, or for another slot — the requests go on to the IdP (200, a miss),
# the outcome is logged at most once per kind every 10 s and counted, and
# nothing is written anywhere a redirection names without checks. And what
# `cluster` does not take fails `nginx -t`, naming the directive.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Time::HiRes qw(time);
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);

start_servers();
my $SECRET = 'h' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub slot_of { key_slot('oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC)) }
my $FAR = int(time) + 3600;
OAuth2Test::idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => "u$_", exp => $FAR } }) } 1 .. 40 });

# A node that answers every connection with `$reply` three times (a write
# asks for up to three replies), then closes once the gateway has sent its call; on port
# `$port` (default: a fresh one).
sub node {
    my ($reply, $port) = @_;
    return mute_server(greeting => $reply x 3, close => 1, ($port ? (port => $port) : ()));
}

# A gateway whose cluster has `$node` as its one seed.
sub gateway {
    my ($name, $node) = @_;
    my %c = fleet_config(name => $name, redis_port => $node->port, shared_port => OAuth2Test::reserve_port(),
        key_file => $KEY, redis => 'cluster');
    $c{config} .= "location = /metrics { auth_oauth2_token_metrics; }\n";
    return start_gateway(%c);
}

sub metric {
    my ($gw, $kind) = @_;
    my $r = OAuth2Test::http_request({ method => 'GET', uri => '/metrics', port => $gw->port });
    return $r->{body} =~ /^oauth2_token_shared_cache_failures_total\{kind="$kind"\} (\d+)$/m ? $1 : undef;
}

# Requests for `@tokens` at `$gw`'s shared server: statuses that were not 200 MISS.
sub misses {
    my ($gw, @tokens) = @_;
    my $port = $1 if $gw->conf_text =~ /listen 127\.0\.0\.1:(\d+) reuseport/;
    return map { my $r = api($port, '/api/x', $_); $r->{status} == 200 && $r->{cache} eq 'MISS' ? () : "$_: $r->{status} $r->{cache}" } @tokens;
}

subtest 'MOVED in a loop: followed three times, then a miss' => sub {
    # The seed sends tok-1's slot to a node that sends it to itself.
    my $port = OAuth2Test::reserve_port();
    my $slot = slot_of('tok-1');
    my $loop = node("-MOVED $slot 127.0.0.1:$port\r\n", $port);
    my $seed = node("-MOVED $slot 127.0.0.1:$port\r\n");
    my $gw = gateway('loop', $seed) or return;
    is_deeply([misses($gw, 'tok-1')], [], 'tok-1: 200 from the IdP');
    ok(wait_until(5, sub { $gw->error_log =~ /shared cache \(Redis\) redirect: Redis Cluster redirected the call more than 3 times/ }),
        'the give-up is logged') or diag($gw->error_log);
    ok(wait_until(5, sub { (metric($gw, 'redirect') // 0) >= 2 }), 'counted (the read and the write)');
    # The read: the seed, then the loop 3 times; its first -MOVED put the
    # slot in the map, so the write goes to the loop first, then 3 more.
    is($loop->connections, 7, 'each call followed 3 redirections, no more');
    like($gw->error_log, qr/cluster: a slot map was refused \(-MOVED\)/, 'the map read got -MOVED: refused, logged');
    my $lines = () = $gw->error_log =~ /shared cache \(Redis\) redirect/g;
    is($lines, 1, 'one line for both (at most one per 10 s)');
    $gw->stop;
    $_->stop for $seed, $loop;
};

subtest 'redirections to no node, or for another slot: not followed' => sub {
    my $slot = slot_of('tok-2');
    my $other = ($slot + 1) % 16384;
    my $target = node("+OK\r\n");
    my $to = '127.0.0.1:' . $target->port;
    for my $case (["-ASK $slot 0.0.0.0:6379", 'an unspecified address'],
        ["-MOVED $slot 255.255.255.255:6379", 'broadcast'],
        ["-MOVED $slot 224.0.0.1:6379", 'multicast'],
        ["-MOVED $slot redis.example:6379", 'a host name'],
        ["-MOVED $slot 127.0.0.1:0", 'port 0'],
        ["-MOVED $other $to", 'another slot'],
        ["-ASK $slot", 'no address'],
        ["-MOVED $slot $to extra", 'more words'])
    {
        my ($greeting, $what) = @$case;
        my $node = node("$greeting\r\n");
        my $gw = gateway('nonsense', $node) or next;
        is_deeply([misses($gw, 'tok-2')], [], "$what: 200 from the IdP");
        ok(wait_until(5, sub { (metric($gw, 'redirect') // 0) >= 2 }), "$what: counted as redirect failures (read, write)");
        $gw->stop;
        $node->stop;
    }
    is($target->connections, 0, 'nothing went where they pointed');
    $target->stop;
};

subtest 'slot maps out of shape are refused' => sub {
    my $array = sub { '*' . scalar(@_) . "\r\n" . join '', @_ };
    my $bulk = sub { '$' . length($_[0]) . "\r\n$_[0]\r\n" };
    my $range = sub { my ($a, $b, $ip, $port) = @_; $array->(":$a\r\n", ":$b\r\n", $array->($bulk->($ip), ":$port\r\n")) };
    for my $case ([$array->($range->(0, 16384, '127.0.0.1', 7000)), 'a slot out of 0..16383'],
        [$array->($range->(0, 16383, '0.0.0.0', 7000)), 'a node\'s address is not an IP address'],
        [$array->($range->(0, 100, '127.0.0.1', 7000), $range->(100, 200, '127.0.0.1', 7001)), 'ranges that overlap'],
        ["-ERR This instance has cluster support disabled", '-ERR'])
    {
        my ($reply, $why) = @$case;
        $reply .= "\r\n" unless $reply =~ /\r\n\z/;
        my $node = node($reply);
        my $gw = gateway('maps', $node) or next;
        is_deeply([misses($gw, 'tok-3')], [], "$why: 200 from the IdP");
        ok(wait_until(5, sub { $gw->error_log =~ /cluster: a slot map was refused \(\Q$why\E\); the last one stays/ }),
            "$why: the map is refused, logged") or diag($gw->error_log);
        unlike($gw->error_log, qr/slot map read/, "$why: no map taken");
        $gw->stop;
        $node->stop;
    }
};

subtest 'what cluster does not take fails nginx -t' => sub {
    my $jwks = write_secret('t.jwks', '{"keys":[{"kty":"RSA","kid":"k","alg":"RS256","e":"AQAB","n":"'
        . '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP'
        . 'ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY'
        . '368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f'
        . 'M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}]}');
    for my $case (["cluster old_key_file=$KEY", qr/"auth_oauth2_token_redis".*old_key_file=.*with.*cluster/],
        ['cluster sentinel=m', qr/"auth_oauth2_token_redis".*"cluster" or "sentinel=", not both/],
        ['cluster database=2', qr/"auth_oauth2_token_redis".*database=.*with.*cluster/],
        ['cluster "prefix={fleet}:"', qr/"auth_oauth2_token_redis".*prefix=.*hash tag/],
        ['cluster', undef, 1])
    {
        my ($params, $says, $ssf) = @$case;
        my %c = fleet_config(name => 'bad', redis_port => 1, shared_port => OAuth2Test::reserve_port(),
            key_file => $KEY, redis => $params);
        $c{http_config} = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=https://idp.test audience=https://gw.test keys=$jwks;\n"
            . $c{http_config} if $ssf;
        my $gw = new_gateway(%c);
        OAuth2Test::spew("$gw->{prefix}/nginx.conf", $gw->conf_text);
        my ($rc, $out) = OAuth2Test::run_command($gw->argv('-t'));
        if (!$says) {
            # A Shared Signals receiver works with a cluster (t/217).
            is($rc, 0, "nginx -t passes: $params with a Shared Signals receiver") or diag($out);
            next;
        }
        isnt($rc, 0, "nginx -t fails: $params");
        like($out, $says, 'naming the directive and why');
    }
};

done_testing();
