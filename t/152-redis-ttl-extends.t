# The Redis tier's hash of a token holds the answers of every policy about
# it, each with its own lifetime sealed inside; the hash's TTL must cover
# the longest (issue 22 item 13). A write used to `PEXPIRE` the whole hash to
# its own lifetime, so a location with a short max_ttl dropped the entries a
# longer-lived policy had written. Now a write sends `PEXPIRE key ms NX`
# (a new hash gets a TTL) and `PEXPIRE key ms GT` (a longer one wins) where
# the server takes them (Redis 7.0+, Valkey); each worker's first write asks
# with a harmless `GT` after a plain `PEXPIRE`.
#   1. Redis 7 (redis-server here): the short policy's write leaves the long
#      TTL; a new hash still gets one; a longer write extends it.
#   2. A server that refuses the options (a proxy in front of Redis answers
#      PEXPIRE with options as Redis 6 does): plain PEXPIRE as before, one
#      probe per worker, no hash left without a TTL, no error logged.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use POSIX ();
use Time::HiRes qw(time sleep);

start_servers();
my $SECRET = 'ttl-fleet-secret-0123456789abcdef-0123456789';
my $KEY = write_secret('fleet.key', "$SECRET\n");
chmod 0600, $KEY;
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub slot { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }

my $FAR = int(time) + 3600;
my $ACTIVE = { json => { active => \1, sub => 'alice', exp => $FAR } };

sub gateway {
    my ($redis_port) = @_;
    my $location = sub {
        my ($name, $ttl) = @_;
        return <<CONF;
location /$name/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect_$name;
    auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=$ttl;
    auth_oauth2_token_shared_cache /_oauth2_redis;
    add_header X-Cache-Status \$oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location = /_introspect_$name { internal; proxy_pass http://idp/introspect; }
CONF
    };
    return block_from(
        http_config => "auth_oauth2_token_redis 127.0.0.1:$redis_port key_file=$KEY;\n"
            . "auth_oauth2_token_client_id gw;\n",
        config => $location->('long', '60s') . $location->('short', '3s')
            . "location = /_oauth2_redis { internal; auth_oauth2_token_redis_pass; }\n",
    );
}

sub st { my ($r) = @_; return "$r->{status} $r->{cache}" }

sub fields { my ($redis, $tok) = @_; return scalar keys %{ $redis->hgetall(slot($tok)) } }

# Asks for $tok on /$where/ (a miss: the IdP answers) and waits for the
# background write, which makes the hash hold $n fields.
sub learn {
    my ($redis, $where, $tok, $n, $label) = @_;
    is(st(api(server_port(), "/$where/x", $tok)), '200 MISS', "$label: /$where/ asks the IdP");
    ok(wait_until(3, sub { fields($redis, $tok) >= $n }), "$label: its answer reaches Redis ($n field(s))");
    # The PEXPIREs follow the HSET in the same pipeline.
    sleep 0.1;
}

sub ttl_between {
    my ($redis, $tok, $low, $high, $label) = @_;
    my $pttl = $redis->pttl(slot($tok));
    ok($pttl > $low && $pttl <= $high, "$label: PTTL $pttl ms is in ($low, $high]");
}

# ---- 1. Redis 7: a write never shortens the hash's lifetime ------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    start_nginx(gateway($redis->port)) or BAIL_OUT('nginx');
    idp_setup({ '*' => $ACTIVE });
    learn($redis, 'long', 'tok-ttl-1', 1, 'long first');
    ttl_between($redis, 'tok-ttl-1', 50_000, 60_000, 'long first');
    learn($redis, 'short', 'tok-ttl-1', 2, 'then short');
    ttl_between($redis, 'tok-ttl-1', 50_000, 60_000, 'then short: the hash keeps the long lifetime');

    learn($redis, 'short', 'tok-ttl-2', 1, 'a new hash');
    ttl_between($redis, 'tok-ttl-2', 0, 3_000, 'a new hash from the short policy: it gets a TTL (NX)');
    learn($redis, 'long', 'tok-ttl-2', 2, 'then long');
    ttl_between($redis, 'tok-ttl-2', 50_000, 60_000, 'then long: the lifetime grows (GT)');

    # The long policy's entry outlives the short one's lifetime.
    sleep 3.2;
    is(fields($redis, 'tok-ttl-1'), 2, 'past the short lifetime, the hash is still there');
    unlike(error_log_text(), qr/shared cache \(Redis\)/, 'no Redis failure logged');
    stop_nginx();
    $redis->stop;
}

# ---- 2. a server that refuses PEXPIRE's options ----------------------------------------
# A proxy in front of Redis: commands one by one, PEXPIRE with more than two
# arguments answered as Redis 6 answers it; every command is written to a file.
sub old_redis_proxy {
    my ($redis_port, $log) = @_;
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16,
        ReuseAddr => 1) or die "proxy: $!";
    my $port = $listener->sockport;
    my $parent = $$;
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $listener;
        return ($pid, $port);
    }
    # A process group of its own (the test kills it whole), no hold on the
    # test's output (prove waits for it), and gone when the test is.
    setpgrp(0, 0);
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
    $SIG{CHLD} = 'IGNORE';
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', '/dev/null';
    my $sel = IO::Select->new($listener);
    while (1) {
        POSIX::_exit(0) if getppid() != $parent;
        $sel->can_read(0.2) or next;
        my $client = $listener->accept or next;
        next if fork;    # the parent keeps accepting
        close $listener;
        my $server = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $redis_port) or POSIX::_exit(1);
        my ($cbuf, $sbuf) = ('', '');
        while (1) {
            my $cmd = eval { RedisTest::resp_read($client, \$cbuf, time + 60) } or last;
            open my $fh, '>>', $log;
            print $fh join(' ', @$cmd), "\n";
            close $fh;
            if (uc $cmd->[0] eq 'PEXPIRE' && @$cmd > 3) {
                syswrite($client, "-ERR wrong number of arguments for 'pexpire' command\r\n");
                next;
            }
            syswrite($server, RedisTest::resp_encode(@$cmd));
            if (uc $cmd->[0] eq 'SUBSCRIBE') {    # the revocation channel: relay as it is
                my $sel = IO::Select->new($client, $server);
                syswrite($client, $sbuf) if length $sbuf;
                while (my @ready = $sel->can_read) {
                    for my $s (@ready) {
                        sysread($s, my $b, 65536) or POSIX::_exit(0);
                        syswrite($s == $client ? $server : $client, $b);
                    }
                }
            }
            my $reply = eval { raw_reply($server, \$sbuf) } // last;
            syswrite($client, $reply);
        }
        POSIX::_exit(0);
    }
    POSIX::_exit(0);
}

# One reply's bytes, as they came (+, -, :, $, * nested).
sub raw_reply {
    my ($sock, $buf) = @_;
    my $deadline = time + 10;
    my $need = sub {
        my ($at) = @_;
        while (1) {
            my $i = index($$buf, "\r\n", $at);
            return $i if $i >= 0;
            die "timeout\n" if time > $deadline;
            IO::Select->new($sock)->can_read(1) or next;
            sysread($sock, my $chunk, 65536) or die "eof\n";
            $$buf .= $chunk;
        }
    };
    my $end;
    $end = sub {
        my ($at) = @_;
        my $eol = $need->($at);
        my ($type, $n) = (substr($$buf, $at, 1), substr($$buf, $at + 1, $eol - $at - 1));
        my $next = $eol + 2;
        if ($type eq '$' && $n >= 0) {
            while (length($$buf) < $next + $n + 2) {
                IO::Select->new($sock)->can_read(1);
                sysread($sock, my $chunk, 65536) or die "eof\n";
                $$buf .= $chunk;
            }
            return $next + $n + 2;
        }
        if ($type eq '*' && $n > 0) {
            $next = $end->($next) for 1 .. $n;
        }
        return $next;
    };
    my $len = $end->(0);
    undef $end;
    return substr($$buf, 0, $len, '');
}

{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $log = prefix() . '/proxy-commands.log';
    unlink $log;
    my ($proxy, $port) = old_redis_proxy($redis->port, $log);
    start_nginx(gateway($port)) or BAIL_OUT('nginx');
    idp_setup({ '*' => $ACTIVE });
    learn($redis, 'long', 'tok-old-1', 1, 'old server, long first');
    ttl_between($redis, 'tok-old-1', 50_000, 60_000, 'old server, long first (plain PEXPIRE)');
    learn($redis, 'short', 'tok-old-1', 2, 'old server, then short');
    ttl_between($redis, 'tok-old-1', 0, 3_000,
        'old server, then short: the last writer\'s lifetime, as documented');
    learn($redis, 'short', 'tok-old-2', 1, 'old server, a new hash');
    ttl_between($redis, 'tok-old-2', 0, 3_000, 'old server, a new hash: it has a TTL');
    my @commands = split /\n/, OAuth2Test::slurp($log);
    my @gt = grep { /^PEXPIRE \S+ \d+ GT$/ } @commands;
    my @nx = grep { /^PEXPIRE \S+ \d+ NX$/ } @commands;
    is(scalar @gt, 1, 'one GT probe (one worker), then no more') or diag(join "\n", @commands);
    is(scalar @nx, 0, 'never NX');
    is(scalar(grep { /^PEXPIRE \S+ \d+$/ } @commands), 3, 'a plain PEXPIRE with each write');
    unlike(error_log_text(), qr/shared cache \(Redis\)/, 'the refused probe is not logged as a failure');
    stop_nginx();
    kill 'KILL', -$proxy;
    waitpid($proxy, 0);
    $redis->stop;
}

done_testing();
