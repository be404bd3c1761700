# The revocation channel cannot be held down (issue 22 items 7 and 10): what
# anyone allowed to PUBLISH can put on <prefix>purge (a message over 1 MiB, a
# flood of junk, a recorded purge message played again, a message under
# another key) is counted, logged at most once per kind every 10 s, and never
# stops the next real purge; a Redis that accepts and never answers, or stops
# answering PING, is noticed (a log line, oauth2_token_revocation_channel_up
# 0) and the channel comes back with it; a server that drops every
# subscription is not reconnected to every 100 ms; the Redis tier's calls read
# replies that come a few bytes at a time (section 7).
#
# Every wait polls a condition with a deadline. Crafted purge messages are
# sealed with Python's `cryptography` (AES-256-GCM) under keys derived as
# redis/fleet.rs derives them; the tag of a token is taken from a real purge
# message, captured by a subscriber of the test's own.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use IO::Socket::INET;
use Digest::SHA qw(hmac_sha256);
use Time::HiRes qw(time);
use POSIX ();
use IO::Select;

# The dribbling server of section 7, stopped however the test ends.
our $DRIBBLE;
END { kill 'KILL', $DRIBBLE if $DRIBBLE }

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $SECRET = 'channel-fleet-secret-0123456789abcdef0123456789';
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $K_ENC = hmac_sha256('oauth2 fleet enc', $SECRET);
my $OTHER_ENC = hmac_sha256('oauth2 fleet enc', 'another-fleet-secret-0123456789abcdef0123456789');
my $CHANNEL = 'oauth2:purge';
my $ACTIVE = { json => { active => \1, sub => 'alice', exp => int(time) + 3600 } };
my $INACTIVE = { json => { active => \0 } };
my $METRICS = "location = /metrics { auth_oauth2_token_metrics; }\n";

my $HAVE_PY = system('python3', '-c', 'from cryptography.hazmat.primitives.ciphers.aead import AESGCM') == 0;

sub py {
    my ($code, @args) = @_;
    open my $fh, '-|', 'python3', '-c', $code, @args or die "python3: $!";
    my $out = do { local $/; <$fh> };
    close $fh or die "python3 failed\n";
    chomp $out;
    return $out;
}

# version 2 || nonce || AES-256-GCM(key, plain, aad = channel)
sub seal {
    my ($key, $plain) = @_;
    my $hex = py(<<'PY', unpack('H*', $key), unpack('H*', $CHANNEL), unpack('H*', $plain));
import os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key, aad, plain = (bytes.fromhex(a) for a in sys.argv[1:4])
nonce = os.urandom(12)
print((b"\x02" + nonce + AESGCM(key).encrypt(nonce, plain, aad)).hex())
PY
    return pack('H*', $hex);
}

sub unseal {
    my ($key, $sealed) = @_;
    my $hex = py(<<'PY', unpack('H*', $key), unpack('H*', $CHANNEL), unpack('H*', $sealed));
import sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key, aad, sealed = (bytes.fromhex(a) for a in sys.argv[1:4])
print(AESGCM(key).decrypt(sealed[1:13], sealed[13:], aad).hex())
PY
    return pack('H*', $hex);
}

sub now_ms { int(time * 1000) }

sub gw {
    my ($name, $port, %o) = @_;
    my %s = fleet_config(name => $name, redis_port => $port, shared_port => $SHARED, key_file => $KEY,
        cache => 'max_ttl=300s', %o);
    $s{config} .= $METRICS;
    return \%s;
}

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

# One gateway's metrics, name{labels} => value.
sub metrics {
    my ($port) = @_;
    my $r = http_request({ method => 'GET', uri => '/metrics', port => $port });
    return { map { /^(\S+) (\S+)$/ ? ($1, $2) : () } grep { !/^#/ } split /\n/, $r->{body} // '' };
}
sub up { metrics($_[0])->{oauth2_token_revocation_channel_up} // 'none' }
sub delivered { metrics($_[0])->{"oauth2_token_revocation_messages_total{result=\"$_[1]\"}"} // 0 }

# PUBLISHes every payload on the channel in one pipeline, then reads the replies.
sub publish {
    my ($redis, @payloads) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $redis->port, Proto => 'tcp')
        or die "publish: $!";
    my $out = join '', map { RedisTest::resp_encode('PUBLISH', $CHANNEL, $_) } @payloads;
    while (length $out) {
        my $n = syswrite($s, $out) or die "publish: $!";
        substr($out, 0, $n, '');
    }
    my $buf = '';
    RedisTest::resp_read($s, \$buf, time + 10) for @payloads;
    close $s;
}

sub purge_on {
    my ($port, $token) = @_;
    return http_request({ method => 'POST', uri => '/purge', port => $port,
        headers => ['Content-Type: application/x-www-form-urlencoded'], body => "token=$token" })->{status};
}

# Until gateway $gw answers $token with status and cache status matching
# $want ("401", "200 HIT", a regex), at most $secs.
sub answers {
    my ($gw, $token, $want, $secs) = @_;
    my $re = ref $want ? $want : qr/^\Q$want\E(?:\s|$)/;
    return wait_until($secs // 3, sub { st(on_gateway($SHARED, $gw, '/api/a', $token, 1)) =~ $re });
}

my %idp = (T => $ACTIVE, U => $ACTIVE, K => $ACTIVE, V => $ACTIVE);
sub idp { %idp = (%idp, @_); idp_setup({%idp}) }

# ---- 0. the fleet: two gateways subscribed, the gauge says so ----------------------------------
my $redis = redis_start() or BAIL_OUT('redis');
idp();
start_nginx(block_from(name => 'gw1', %{ gw('gw1', $redis->port) })) or BAIL_OUT('gateway 1');
my $GW1 = server_port();
my $gw2 = start_gateway(%{ gw('gw2', $redis->port) }) or BAIL_OUT('gateway 2');
ok($redis->wait_numsub($CHANNEL, 2), 'both gateways subscribed');
# Fails before: no such metric.
ok(wait_until(3, sub { up($gw2->port) eq '1' }), 'oauth2_token_revocation_channel_up is 1 on gateway 2')
    or diag(up($gw2->port));
is(up($GW1), '1', 'and on gateway 1');
for my $t (qw(T U K V)) {
    ok(answers('gw2', $t, '200 HIT', 5), "gateway 2 has $t in its zone");
}

# ---- 1. a message over 1 MiB does not stop the next purge --------------------------------------
{
    idp(T => $INACTIVE);    # revoke first, then purge
    my $mark = length $gw2->error_log;
    publish($redis, 'x' x (2 * 1024 * 1024));
    is(purge_on($GW1, 'T'), 200, 'oversized: then T is purged on gateway 1');
    # Fails before: more than 1 MiB pending failed the channel; the purge
    # published behind it went to the closed connection.
    ok(answers('gw2', 'T', '401'), 'oversized: gateway 2 got the purge behind it (T asks the IdP: 401)');
    my $log = substr($gw2->error_log, $mark);
    like($log, qr/revocation channel: ignored a message over 4096 bytes/, 'oversized: logged');
    unlike($log, qr/revocation channel down/, 'oversized: the channel stayed up');
    ok(wait_until(2, sub { delivered($gw2->port, 'oversized') == 1 }), 'oversized: counted')
        or diag(explain(metrics($gw2->port)));
    cmp_ok(delivered($gw2->port, 'applied'), '>=', 1, 'oversized: the purge counted as applied');
    is(up($gw2->port), '1', 'oversized: still up');
}

# ---- 2. messages played again, under another key, too old ---------------------------------------
SKIP: {
    skip 'python3 with cryptography is needed to seal purge messages', 14 unless $HAVE_PY;
    # A real purge message of K, captured from the channel.
    my $cap = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $redis->port, Proto => 'tcp') or die $!;
    my $buf = '';
    syswrite($cap, RedisTest::resp_encode('SUBSCRIBE', $CHANNEL));
    RedisTest::resp_read($cap, \$buf, time + 3);
    is(purge_on($GW1, 'K'), 200, 'replay: K purged once');
    my $msg = RedisTest::resp_read($cap, \$buf, time + 3);
    close $cap;
    my $recorded = $msg->[2];
    is(length $recorded, 45, 'replay: a purge message is 45 bytes (version, nonce, tag, time, GCM tag)');
    my $plain = unseal($K_ENC, $recorded);
    my ($tag, $at) = (substr($plain, 0, 8), unpack('q<', substr($plain, 8, 8)));
    cmp_ok(abs(now_ms() - $at), '<', 60_000, 'replay: it carries the time of the purge');
    ok(answers('gw2', 'K', qr/^200 (?:MISS|HIT_SHARED)$/), 'replay: gateway 2 no longer had K in its zone');
    ok(answers('gw2', 'K', '200 HIT'), 'replay: and has K in its zone again');

    # Each refused message is counted; K stays in gateway 2's zone.
    my $refused = sub {
        my ($what, $kind, $payload) = @_;
        my $before = delivered($gw2->port, $kind);
        publish($redis, $payload);
        ok(wait_until(3, sub { delivered($gw2->port, $kind) > $before }), "$what: counted as $kind");
        is(st(on_gateway($SHARED, 'gw2', '/api/a', 'K', 1)), '200 HIT', "$what: gateway 2 still has K");
    };
    my $mark = length $gw2->error_log;
    # Fails before: a message under another key was dropped without a word.
    $refused->('another key', 'unopened', seal($OTHER_ENC, $tag . pack('q<', now_ms())));
    like(substr($gw2->error_log, $mark), qr/ignored a message that does not open with this gateway's keys/,
        'another key: logged');
    # Fails before: the message K's purge published a moment ago, again.
    $refused->('the recorded message played again', 'replayed', $recorded);
    # Fails before: a message as versions before the purge time published
    # it (the tag alone) was applied whenever it was played.
    $refused->('a tag-only message', 'unopened', seal($K_ENC, $tag));
    # Fails before (only by its count and line: that format did not open before).
    $refused->('a purge of ten minutes ago', 'stale', seal($K_ENC, $tag . pack('q<', now_ms() - 600_000)));
    like(substr($gw2->error_log, $mark), qr/ignored a purge message older than 300 s/, 'too old: logged');
    # The same message, made now, is a purge: the crafted messages were well made.
    publish($redis, seal($K_ENC, $tag . pack('q<', now_ms())));
    ok(answers('gw2', 'K', qr/^200 (?:MISS|HIT_SHARED)$/), 'a fresh message with the same tag purges K');
}

# ---- 3. a flood of junk does not stop a real purge ---------------------------------------------
{
    my $mark = length $gw2->error_log;
    my $before = delivered($gw2->port, 'unopened');
    my $big = delivered($gw2->port, 'oversized');
    my @junk = map { join '', map { chr int rand 256 } 1 .. (1 + $_ % 200) } 1 .. 1000;
    push @junk, map { chr(2) . ('j' x 44) } 1 .. 200;    # a purge message's length
    splice @junk, $_ * 300, 0, 'y' x (1200 * 1024) for 1 .. 3;    # over 1 MiB each
    idp(U => $INACTIVE);
    publish($redis, @junk);
    is(purge_on($GW1, 'U'), 200, 'flood: then U is purged on gateway 1');
    # Fails before: the messages over 1 MiB failed the channel.
    ok(answers('gw2', 'U', '401'), 'flood: gateway 2 got the purge behind 1203 junk messages');
    ok(wait_until(3, sub { delivered($gw2->port, 'unopened') - $before == 1200 }), 'flood: each junk message counted')
        or diag(delivered($gw2->port, 'unopened') - $before);
    is(delivered($gw2->port, 'oversized') - $big, 3, 'flood: the three over 4 KiB too');
    my $log = substr($gw2->error_log, $mark);
    my $lines = () = $log =~ /ignored a message that does not open/g;
    cmp_ok($lines, '<=', 1, "flood: at most one line for 1200 junk messages ($lines)");
    unlike($log, qr/revocation channel down/, 'flood: the channel stayed up');
}

# ---- 4. Redis stops answering (DEBUG SLEEP): noticed by PING, and back ---------------------------
{
    my $mark = length $gw2->error_log;
    $redis->sleep_in_background(10);
    # Fails before: nothing was ever logged, no PING was sent.
    ok(wait_until(12, sub { substr($gw2->error_log, $mark) =~ /revocation channel down \(no answer to PING within 3000 ms\)/ }),
        'asleep: gateway 2 noticed (no answer to PING) and logged it')
        or diag(substr($gw2->error_log, $mark));
    ok(wait_until(3, sub { up($gw2->port) eq '0' }), 'asleep: the gauge says down');
    my $downs = () = substr($gw2->error_log, $mark) =~ /revocation channel down/g;
    is($downs, 1, 'asleep: one line for the outage, whatever the reconnections');
    $redis->wait_sleep;
    ok(wait_until(15, sub { substr($gw2->error_log, $mark) =~ /revocation channel subscribed again/ }),
        'awake: gateway 2 subscribed again');
    ok(wait_until(3, sub { up($gw2->port) eq '1' }), 'awake: the gauge says up');
    ok(answers('gw2', 'V', '200 HIT', 5), 'awake: gateway 2 still has V');
    idp(V => $INACTIVE);
    is(purge_on($GW1, 'V'), 200, 'awake: V purged on gateway 1');
    ok(answers('gw2', 'V', '401'), 'awake: the purge reached gateway 2');
}
$gw2->stop;
stop_nginx();

# ---- 5. a server that accepts and never answers: the handshake's deadline ----------------------
{
    my $r3 = redis_start() or BAIL_OUT('redis 3');
    $r3->stop;    # its port stays reserved, refused
    my $mute = mute_server(port => $r3->port);
    my $gw3 = start_gateway(%{ gw('gw3', $r3->port, listen => '127.0.0.1:' . OAuth2Test::reserve_port()) })
        or BAIL_OUT('gateway 3');
    # Fails before: the channel waited for the confirmation for ever, silently.
    ok(wait_until(8, sub { $gw3->error_log =~ /revocation channel down \(no answer to the handshake \(AUTH, SELECT, SUBSCRIBE\) within 3000 ms\)/ }),
        'mute: gateway 3 noticed that the server does not answer')
        or diag($gw3->error_log);
    is(up($gw3->port), '0', 'mute: the gauge says down');
    cmp_ok($mute->connections, '>=', 1, 'mute: it did connect');
    $mute->stop;
    ok($r3->restart, 'mute: a real Redis on that port again');
    ok(wait_until(10, sub { $gw3->error_log =~ /revocation channel subscribed again/ }), 'mute: the channel came back')
        or diag($gw3->error_log);
    ok(wait_until(3, sub { up($gw3->port) eq '1' }), 'mute: the gauge says up');
    ok($r3->wait_numsub($CHANNEL, 1), 'mute: Redis has the subscriber');
    $gw3->stop;
    $r3->stop;
}

# ---- 6. a server that drops each subscription: the backoff is kept ------------------------------
{
    my $confirm = "*3\r\n\$9\r\nsubscribe\r\n\$12\r\n$CHANNEL\r\n:1\r\n";
    my $flap = mute_server(greeting => $confirm, close => 1);
    my $gw4 = start_gateway(%{ gw('gw4', $flap->port, listen => '127.0.0.1:' . OAuth2Test::reserve_port()) })
        or BAIL_OUT('gateway 4');
    my $start = time;
    ok(wait_until(5, sub { $flap->connections >= 3 }), 'flapping: gateway 4 subscribes, is dropped, comes again');
    # Wait until 4 s after the first connection: with the backoff kept (100,
    # 200, 400, 800, 1600 ms ...) that is 6 connections at most; before, each
    # subscription reset it to 100 ms (about 35 in 4 s).
    wait_until(4.5, sub { time - $start >= 4 });
    my $n = $flap->connections;
    cmp_ok($n, '<=', 8, "flapping: $n connections in 4 s, not one per 100 ms");
    my $downs = () = $gw4->error_log =~ /revocation channel down/g;
    is($downs, 1, 'flapping: one line for the outage');
    $gw4->stop;
    $flap->stop;
}

# ---- 7. the Redis tier's replies a few bytes at a time (item 10, the calls' side) ----------------
# A server that answers every command a few bytes per write: HGET with a
# 3000-byte value (not sealed: it must be read whole, then refused as
# undecryptable, not as a protocol error), anything else with :1. The call
# reads each piece where the last stopped.
{
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
        or die "dribble: $!";
    my $port = $listener->sockport;
    my $count = OAuth2Test::prefix() . '/dribble.count';
    $DRIBBLE = fork // die "fork: $!";
    if (!$DRIBBLE) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        $SIG{PIPE} = 'IGNORE';
        my $sel = IO::Select->new($listener);
        my %buf;
        while (1) {
            getppid() == 1 and POSIX::_exit(0);
            for my $s ($sel->can_read(0.2)) {
                if ($s == $listener) {
                    my $c = $listener->accept or next;
                    $sel->add($c);
                    $buf{ fileno $c } = '';
                    next;
                }
                my $b = \$buf{ fileno $s };
                my @cmds;
                my $open = eval {
                    push @cmds, RedisTest::resp_read($s, $b, time + 2);
                    push @cmds, RedisTest::resp_read($s, $b, time + 1) while length $$b;
                    1;
                };
                for my $cmd (@cmds) {
                    open my $fh, '>>', $count; print $fh uc($cmd->[0]), "\n"; close $fh;
                    my $reply = uc($cmd->[0]) eq 'HGET' ? "\$3000\r\n" . ('z' x 3000) . "\r\n" : ":1\r\n";
                    while (length $reply) {
                        syswrite($s, substr($reply, 0, 7, '')) or last;
                        select(undef, undef, undef, 0.001);
                    }
                }
                next if $open;
                $sel->remove($s);
                delete $buf{ fileno $s };
                close $s;
            }
        }
    }
    close $listener;
    my $gw5 = start_gateway(%{ gw('gw5', $port, listen => '127.0.0.1:' . OAuth2Test::reserve_port(),
        redis_location => 'auth_oauth2_token_redis_read_timeout 10s;') }) or BAIL_OUT('gateway 5');
    idp(D => $ACTIVE);
    my ($listen) = $gw5->{sections}{http_config} =~ /listen (127\.0\.0\.1:\d+)/;
    my ($dport) = $listen =~ /:(\d+)$/;
    my $r = api($dport, '/api/a', 'D');
    is(st($r), '200 MISS', 'pieces: the request gets the IdP\'s answer');
    ok(wait_until(10, sub { (OAuth2Test::slurp($count) =~ tr/\n//) >= 3 }), 'pieces: the lookup and the write reached the server')
        or diag(OAuth2Test::slurp($count));
    my $m = {};
    ok(wait_until(10, sub { $m = metrics($gw5->port);
        ($m->{'oauth2_token_shared_cache_failures_total{kind="undecryptable"}'} // 0) == 1 }),
        'pieces: the 3000-byte value was read whole (and refused as not sealed)') or diag(explain($m));
    is($m->{"oauth2_token_shared_cache_failures_total{kind=\"$_\"}"} // 'none', 0, "pieces: no $_ failure")
        for qw(protocol timeout connect);
    is(st(api($dport, '/api/a', 'D')), '200 HIT', 'pieces: then from the zone');
    $gw5->stop;
    kill 'KILL', $DRIBBLE;
    waitpid($DRIBBLE, 0);
    undef $DRIBBLE;
}

done_testing();
