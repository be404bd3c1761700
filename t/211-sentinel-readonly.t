# Sentinel (issue 28): a primary that turns replica without a word from
# the sentinels. A scripted sentinel (a Perl listener that answers
# `SENTINEL get-master-addr-by-name` with the address in a file, confirms
# SUBSCRIBE, and never publishes +switch-master) names Redis A; the tier
# writes there. Then A becomes a replica of B and the script names B,
# silently: the gateway's next write gets -READONLY from A, which makes it
# ask again, and the writes after that land on B. A sentinel that never
# answers (3 s), does not know the name (nil) or names a host name is left
# for the next.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time);
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $SECRET = 'r' x 40;
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub key_of { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }

my $a = redis_start() or BAIL_OUT('redis A');
my $b = redis_start() or BAIL_OUT('redis B');

# A scripted sentinel: answers with "ip port" read from $file at each
# question ("nil" for a nil answer); counts the questions in "$file.asked".
my @scripts;
sub scripted_sentinel {
    my ($file) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
        or die "listen: $!\n";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        $SIG{PIPE} = 'IGNORE';
        my $sel = IO::Select->new($l);
        my %buf;
        my $asked = 0;
        while (1) {
            getppid() == 1 and POSIX::_exit(0);
            for my $s ($sel->can_read(0.1)) {
                if ($s == $l) { my $c = $l->accept or next; $sel->add($c); $buf{ fileno $c } = ''; next }
                my $n = sysread($s, my $chunk, 65536);
                if (!$n) { $sel->remove($s); delete $buf{ fileno $s }; close $s; next }
                my $in = \$buf{ fileno $s };
                $$in .= $chunk;
                while ($$in =~ s/^\*(\d+)\r\n((?:\$\d+\r\n[^\r\n]*\r\n)+)//) {
                    my @w = $2 =~ /\$\d+\r\n([^\r\n]*)\r\n/g;
                    if (uc($w[0]) eq 'SENTINEL') {
                        $asked++;
                        OAuth2Test::spew("$file.asked", $asked);
                        my $what = OAuth2Test::slurp($file);
                        $what =~ s/\s+$//;
                        my $out = $what eq 'nil' ? "*-1\r\n"
                            : RedisTest::resp_encode(split / /, $what);
                        syswrite($s, $out);
                    } elsif (uc($w[0]) eq 'SUBSCRIBE') {
                        syswrite($s, "*3\r\n\$9\r\nsubscribe\r\n\$" . length($w[1]) . "\r\n$w[1]\r\n:1\r\n");
                    }
                }
            }
        }
    }
    push @scripts, $pid;
    my $port = $l->sockport;
    close $l;
    return $port;
}
END { my $rc = $?; kill "KILL", @scripts if @scripts; waitpid($_, 0) for @scripts; $? = $rc }

my $dir = OAuth2Test::prefix();
OAuth2Test::spew("$dir/s1", "nil\n");                        # does not know the name
OAuth2Test::spew("$dir/s2", "redis.internal " . $a->port);  # a host name
OAuth2Test::spew("$dir/s3", "127.0.0.1 " . $a->port);
my $mute = mute_server();
my @ports = ($mute->port, map { scripted_sentinel("$dir/s$_") } 1 .. 3);

my $FAR = int(time) + 3600;
OAuth2Test::idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => "u$_", exp => $FAR } }) } 1 .. 30 });
my %fleet = (redis_port => 0, shared_port => $SHARED, key_file => $KEY, redis => 'sentinel=mymaster',
    upstream_servers => join(' ', map { "server 127.0.0.1:$_;" } @ports));
start_nginx(block_from(name => 'gw1', fleet_config(%fleet, name => 'gw1'))) or BAIL_OUT('gateway');
sub log_text { OAuth2Test::error_log_text() }

ok(wait_until(10, sub { log_text() =~ /primary is 127\.0\.0\.1:${\ $a->port}/ }),
    'the fourth sentinel names A') or diag(log_text());
like(log_text(), qr/sentinel 1 of the upstream could not tell the primary: no answer within 3000 ms/,
    'the first never answered');
like(log_text(), qr/sentinel 2 of the upstream could not tell the primary: it does not know the name/,
    'the second did not know the name');
like(log_text(), qr/sentinel 3 of the upstream could not tell the primary: an address that is not an IP address/,
    'the third named a host name');

sub written_to {
    my ($redis, $token) = @_;
    is(api($SHARED, '/api/x', $token)->{status}, 200, "$token: 200");
    return wait_until(5, sub { $redis->try_cmd('EXISTS', key_of($token)) eq '1' });
}
ok(written_to($a, 'tok-1'), 'a write lands on A');

# A turns replica of B; the sentinels name B, and say nothing.
OAuth2Test::spew("$dir/$_", "127.0.0.1 " . $b->port) for qw(s1 s2 s3);
is($a->cmd('REPLICAOF', '127.0.0.1', $b->port), 'OK', 'A is now a replica of B');
ok(wait_until(10, sub { ($a->try_cmd('INFO', 'replication') // '') =~ /master_link_status:up/ }), 'A follows B');
my $asked = OAuth2Test::slurp("$dir/s1.asked") + OAuth2Test::slurp("$dir/s2.asked") + OAuth2Test::slurp("$dir/s3.asked");
my $n = 1;
ok(wait_until(10, sub { written_to($b, 'tok-' . ++$n) }), "after -READONLY, writes land on B (tok-$n)");
like(log_text(), qr/primary moved from 127\.0\.0\.1:${\ $a->port} to 127\.0\.0\.1:${\ $b->port}/, 'the move is logged');
my $asked_after = OAuth2Test::slurp("$dir/s1.asked") + OAuth2Test::slurp("$dir/s2.asked") + OAuth2Test::slurp("$dir/s3.asked");
cmp_ok($asked_after, '>', $asked, 'the sentinels were asked again');
like(($a->try_cmd('INFO', 'errorstats') // ''), qr/errorstat_READONLY:count=[1-9]/, 'A refused a write (-READONLY)');
like(log_text(), qr/shared cache \(Redis\) error reply: -READONLY/, 'the refusal is logged as a Redis failure');

done_testing();
