# A hostile Redis cannot make a worker read a huge nested reply (issue 22,
# item 10). Before the fix, both readers of Redis replies (the revocation
# channel's, redis/subscriber.rs, and the Redis tier's calls,
# redis/upstream.rs) parsed everything received from its start after every
# read, and accepted any reply within 4 levels of arrays of 1024 elements:
# a server that sent a large nested reply a few bytes at a time made the
# worker parse it again and again (256 reads of a 1 MiB reply: 1.35 s of
# CPU). Now a reader keeps its place between reads and has limits: on the
# channel, arrays of at most 3 plain values (what pub/sub sends); for the
# calls, at most 4096 values in a reply. A reply past them is refused as
# soon as its bytes pass the limit, while the rest is still on its way.
#
# The server here is a Perl listener that plays Redis. It answers the first
# SUBSCRIBE, and then the first HGET, with a 470 KB reply of arrays nested
# four deep (within the old limits), sending its first 24 KiB and then
# waiting for the gateway to close the connection before it sends any
# more. What is asserted is deterministic, not a time or a CPU figure:
#
#   1. the channel: the gateway drops the connection after those 24 KiB,
#      logs "revocation channel down (unreadable replies)", and subscribes
#      again (the server behaves on the next connection);
#   2. the calls: the request is answered from the IdP (Redis trouble is a
#      miss), the gateway drops the connection after those 24 KiB, the
#      failure is counted and logged as a protocol failure (not a timeout),
#      and the next request is a HIT from the zone: the worker goes on.
#
# Before the fix, the gateway kept both connections waiting for the rest
# (the server gives up waiting after 10 s and sends it); the channel
# accepted the reply silently. Every wait polls a condition with a deadline.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(sleep time);

our $HOSTILE;
END { kill 'KILL', $HOSTILE if $HOSTILE }

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $KEY = write_secret('fleet.key', "hostile-redis-fleet-secret-0123456789abcdef0123\n");
my $CHANNEL = 'oauth2:purge';
my $EVENTS = prefix() . '/hostile.events';

# Four levels of arrays (200 x 8 x 8 x 8) around 102,400 integers: 468,000
# bytes, 117,000 values. Within what the reader accepted before the fix
# (depth 4, arrays of up to 1024, less than 1 MiB pending on the channel);
# past today's limits: the channel's (an array of more than 3 elements) at
# its first header, the calls' (4096 values) after about 16 KiB.
my $leaf = '*8' . "\r\n" . (":1\r\n" x 8);
my $REPLY = "*200\r\n" . (("*8\r\n" . (("*8\r\n" . $leaf x 8) x 8)) x 200);
my $FIRST = 24 * 1024;
my $TOTAL = length $REPLY;

sub event {
    open my $fh, '>>', $EVENTS or return;
    print $fh "@_\n";
    close $fh;
}

sub events { OAuth2Test::slurp($EVENTS) // '' }

# Whether the peer closed $s (EOF or reset), waiting up to $secs.
sub closed_within {
    my ($s, $secs) = @_;
    my $deadline = time + $secs;
    my $sel = IO::Select->new($s);
    while (1) {
        my $left = $deadline - time;
        return 0 if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($s, my $junk, 65536);
        return 1 if !$n;    # 0: EOF; undef: reset
    }
}

# Sends the nested reply: 24 KiB, then nothing until the gateway closes the
# connection (at most 10 s), then the rest 1 KiB at a time.
sub hostile_reply {
    my ($s, $what) = @_;
    my $sent = 0;
    while ($sent < $FIRST) {
        my $n = syswrite($s, $REPLY, $FIRST - $sent, $sent);
        return event("$what: write failed after $sent") unless $n;
        $sent += $n;
    }
    event("$what: sent $sent of $TOTAL, waiting");
    if (closed_within($s, 10)) {
        return event("$what: closed by the gateway after $sent of $TOTAL");
    }
    event("$what: still open after 10 s");
    while ($sent < $TOTAL) {
        my $n = syswrite($s, $REPLY, 1024, $sent);
        return event("$what: closed by the gateway after $sent of $TOTAL (late)") unless $n;
        $sent += $n;
    }
    event("$what: sent all $TOTAL");
}

# ---- the server ----------------------------------------------------------------------------------
{
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
        or die "hostile server: $!";
    our $PORT = $listener->sockport;
    unlink $EVENTS;
    $HOSTILE = fork // die "fork: $!";
    if (!$HOSTILE) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        $SIG{PIPE} = 'IGNORE';
        my $sel = IO::Select->new($listener);
        my (%buf, $subscribes, $hgets);
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
                my $keep = 1;
                for my $cmd (@cmds) {
                    my $name = uc $cmd->[0];
                    event("command $name");
                    if ($name eq 'SUBSCRIBE') {
                        syswrite($s, "*3\r\n\$9\r\nsubscribe\r\n\$" . length($cmd->[1]) . "\r\n$cmd->[1]\r\n:1\r\n");
                        if (++$subscribes == 1) {
                            hostile_reply($s, 'channel');
                            $keep = 0;
                            last;
                        }
                    } elsif ($name eq 'PING') {
                        syswrite($s, "*2\r\n\$4\r\npong\r\n\$0\r\n\r\n");
                    } elsif ($name eq 'HGET') {
                        if (++$hgets == 1) {
                            hostile_reply($s, 'call');
                            $keep = 0;
                            last;
                        }
                        syswrite($s, "\$-1\r\n");
                    } else {
                        syswrite($s, ":1\r\n");
                    }
                }
                next if $open && $keep;
                $sel->remove($s);
                delete $buf{ fileno $s };
                close $s;
            }
        }
    }
    close $listener;
}
our $PORT;

my %s = fleet_config(name => 'gw1', redis_port => $PORT, shared_port => $SHARED, key_file => $KEY,
    # Past the server's 10 s: a call the gateway does not refuse waits for
    # the rest of the reply instead of timing out. Room for the whole reply.
    redis_location => "auth_oauth2_token_redis_read_timeout 30s;\n        auth_oauth2_token_redis_buffer_size 1m;");
$s{config} .= "location = /metrics { auth_oauth2_token_metrics; }\n";
idp_setup({ D => { json => { active => \1, sub => 'dee', exp => int(time) + 3600 } } });
start_nginx(block_from(name => 'hostile redis', %s)) or BAIL_OUT('nginx');

sub metrics {
    my $r = http_request({ method => 'GET', uri => '/metrics', port => server_port() });
    return { map { /^(\S+) (\S+)$/ ? ($1, $2) : () } grep { !/^#/ } split /\n/, $r->{body} // '' };
}
sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

# ---- 1. the channel -------------------------------------------------------------------------------
ok(wait_until(10, sub { events() =~ /^channel: sent \d+ of $TOTAL, waiting$/m }),
    'channel: the gateway subscribed and the server sent the first 24 KiB of its nested reply')
    or diag(events());
# Fails before: the channel's reader waited for the rest of the reply.
ok(wait_until(12, sub { events() =~ /^channel: (?:closed|still open)/m }) && events() =~ /^channel: closed by the gateway after $FIRST of $TOTAL$/m,
    'channel: the gateway dropped the connection before the rest was sent')
    or diag(events());
# Fails before: the reply was accepted (and ignored) without a word.
ok(wait_until(3, sub { error_log_text() =~ /revocation channel down \(unreadable replies\)/ }),
    'channel: logged as unreadable replies');
ok(wait_until(10, sub { error_log_text() =~ /revocation channel subscribed again/ }),
    'channel: subscribed again on the next connection');
ok(wait_until(3, sub { (metrics()->{oauth2_token_revocation_channel_up} // '') eq '1' }), 'channel: the gauge says up');

# ---- 2. the calls ---------------------------------------------------------------------------------
{
    my $r = api($SHARED, '/api/a', 'D', timeout => 40);
    is(st($r), '200 MISS', 'calls: the request gets the IdP\'s answer (Redis trouble is a miss)');
    # Fails before: the call's reader waited for the rest of the reply.
    # The server notes the close when it sees it, which may be just after the answer.
    ok(wait_until(5, sub { events() =~ /^call: closed by the gateway after $FIRST of $TOTAL$/m }),
        'calls: the gateway dropped the connection before the rest was sent') or diag(events());
    my $m = {};
    ok(wait_until(5, sub { $m = metrics(); ($m->{'oauth2_token_shared_cache_failures_total{kind="protocol"}'} // 0) == 1 }),
        'calls: counted as a protocol failure') or diag(explain($m));
    is($m->{'oauth2_token_shared_cache_failures_total{kind="timeout"}'} // 'none', 0, 'calls: not as a timeout');
    like(error_log_text(), qr/shared cache \(Redis\) protocol: /, 'calls: logged as a protocol failure');
    is(st(api($SHARED, '/api/a', 'D')), '200 HIT', 'calls: the worker goes on: the next request is a HIT from the zone');
    is(calls_for('D'), 1, 'calls: one IdP call in all');
}

unlike(error_log_text(), qr/exited on signal|worker process \d+ exited/, 'no worker died');
stop_nginx();
kill 'KILL', $HOSTILE;
waitpid($HOSTILE, 0);
undef $HOSTILE;

done_testing();
