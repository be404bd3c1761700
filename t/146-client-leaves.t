# Clients that leave while the IdP is being asked leave nothing behind
# (issue 22, item 12). Two workers, so that the key's mark in the shared zone
# (which holds the other worker back while one asks the IdP) matters.
#
#   1. A hanging IdP; 30 clients on one token, spread over both workers: one
#      asks, the others wait for it (in its worker) or for its mark (in the
#      other). The waiting clients close their connections (as a client does
#      at its timeout), then the asker's. Every worker's open files come
#      back to what they were before, each time at once: no request is left
#      waiting for an answer nobody will read, and none of them asks the IdP
#      again. Then the IdP answers again, and a new request with that token
#      is answered within a client timeout well under the mark's 5 s
#      deadline: no dead request's mark holds it back.
#   2. The client of the request that asks the IdP leaves while live
#      clients wait for it: they are handed the question at once and get
#      their answer within the same short client timeout, with one more IdP
#      call, not after the dead request's mark ran out.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

# How long a request may take to be "at once", and how long the workers get
# to close what dead clients left: well under the mark's deadline (5 s,
# CLAIM_MS in src/oauth/cache/mark.rs), so that a mark left by a dead request,
# and freed only by that deadline, cannot pass for a released one.
my $AT_ONCE = 2;
# Bound of the waits for what must happen anyway (requests arriving, counters
# moving); only a broken gateway reaches it.
my $PATIENCE = 10;
my $CLIENTS = 30;

start_servers();

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 1) or die $!;
    my $port = $s->sockport;
    close $s;
    return $port;
}
my $PORT = free_port();
my $METRICS_PORT = free_port();

# reuseport: each worker has its own listening socket and the kernel spreads
# connections over them. The internal location's proxy_read_timeout outlasts
# the test: only the clients leaving end the hanging calls.
my $http = <<CONF;
auth_oauth2_token_introspect_cache zone=tokens:1m;
server {
    listen 127.0.0.1:$PORT reuseport;
    location / {
        auth_oauth2_token_introspect on;
        auth_oauth2_token_introspect_endpoint /_introspect;
        auth_oauth2_token_client_id gw;
        proxy_pass http://backend;
    }
    location = /_introspect {
        internal;
        proxy_set_header X-Worker \$pid;
        proxy_read_timeout 120s;
        proxy_pass http://idp/introspect;
    }
}
server {
    listen 127.0.0.1:$METRICS_PORT reuseport;
    location = /metrics { auth_oauth2_token_metrics; }
}
CONF

start_nginx(block_from(name => 'clients leave', workers => 2, http_config => $http, config => ''))
    or BAIL_OUT('nginx');
my @workers = sort { $a <=> $b } worker_pids();
is(scalar @workers, 2, 'two workers');

sub fds {
    my ($pid) = @_;
    opendir my $d, "/proc/$pid/fd" or die "/proc/$pid/fd: $!";
    my $n = grep { !/^\.\.?$/ } readdir $d;
    closedir $d;
    return $n;
}
sub all_fds { return { map { $_ => fds($_) } @workers } }
sub show { my ($h) = @_; return join ', ', map { "$_: $h->{$_}" } sort keys %$h }

# Polls `cond` until it holds or `seconds` pass; true when it held.
sub wait_for {
    my ($seconds, $cond) = @_;
    my $deadline = time + $seconds;
    while (1) {
        return 1 if $cond->();
        return 0 if time >= $deadline;
        sleep 0.02;
    }
}

sub metric {
    my ($series) = @_;
    my $r = http_request({ method => 'GET', uri => '/metrics', port => $METRICS_PORT, timeout => 5 });
    for my $line (split /\n/, $r->{body} // '') {
        return $1 if $line =~ /^\Q$series\E (\S+)$/;
    }
    return 0;
}
my $MISSES = 'oauth2_token_cache_lookups_total{zone="tokens",result="miss"}';
my $WAITS  = 'oauth2_token_coalesced_waits_total{zone="tokens"}';

sub request_bytes {
    my ($token) = @_;
    return "GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer $token\r\n\r\n";
}

sub connect_client {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $PORT, Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    return $s;
}

# The workers' files before any request: listening sockets, logs, the
# event loop's, the channel to the master. No upstream connection is kept
# yet (keepalive holds only connections whose answer was read).
my $baseline;
wait_for(1, sub { my $a = all_fds(); my $same = $baseline && show($a) eq show($baseline); $baseline = $a; $same });
note('open files at start: ' . show($baseline));

# ---- 1. thirty clients leave a hanging IdP call ----------------------------------

{
    idp_setup({ gone => { mode => 'hang' } });
    my ($misses0, $waits0) = (metric($MISSES), metric($WAITS));

    # The connections first, so that their spread over the workers is known
    # before any request is sent (the kernel's hash of the client port decides).
    my @clients = map { connect_client() } 1 .. $CLIENTS;
    my $accepted = wait_for($PATIENCE, sub {
        my $now = all_fds();
        my $extra = 0;
        $extra += $now->{$_} - $baseline->{$_} for @workers;
        $extra >= $CLIENTS;
    });
    ok($accepted, "the workers accepted the $CLIENTS connections");
    my $spread = all_fds();
    ok(!grep({ $spread->{$_} <= $baseline->{$_} } @workers), 'both workers got some of them')
        or diag('open files: ' . show($spread));

    # The first request asks the IdP (in the worker the IdP's X-Worker names);
    # the others are sent once it does, and wait: for it in its worker, for its
    # mark in the other.
    my ($asker, @waiters) = @clients;
    syswrite($asker, request_bytes('gone'));
    ok(wait_for($PATIENCE, sub { @{ idp_requests() } == 1 }), 'the first request asks the IdP, which hangs');
    my ($asking) = map { $_->[1] } grep { lc $_->[0] eq 'x-worker' } @{ idp_requests()->[0]{headers} };
    syswrite($_, request_bytes('gone')) for @waiters;
    my $queued = wait_for($PATIENCE, sub {
        metric($MISSES) - $misses0 == $CLIENTS && metric($WAITS) - $waits0 == $CLIENTS - 1
    });
    ok($queued, "all $CLIENTS requests missed the cache; all but the first wait for another's IdP call")
        or diag(sprintf('misses %d, waits %d', metric($MISSES) - $misses0, metric($WAITS) - $waits0));

    # The waiting clients leave (close, as a client does at its timeout): each
    # worker closes their connections at once; the asking worker still has the
    # asker's and its IdP call's.
    close $_ for @waiters;
    my $last;
    my %expect = map { $_ => $baseline->{$_} + (($asking // 0) == $_ ? 2 : 0) } @workers;
    ok(wait_for($AT_ONCE, sub { $last = all_fds(); show($last) eq show(\%expect) }),
        "the $#clients waiting clients left: their requests end within ${AT_ONCE}s")
        or diag('expected: ' . show(\%expect) . '; now: ' . show($last));

    # Then the asker's client leaves: its call ends, and nothing is left.
    close $asker;
    ok(wait_for($AT_ONCE, sub { $last = all_fds(); show($last) eq show($baseline) }),
        "the asker's client left too: every worker's open files are back to what they were, within ${AT_ONCE}s")
        or diag('at start: ' . show($baseline) . '; now: ' . show($last));
    is(scalar @{ idp_requests() }, 1, 'the requests whose clients left asked the IdP nothing more');

    idp_setup({ gone => { json => { active => \1, sub => 'alice' } } });
    my $live = http_request({ method => 'GET', uri => '/', port => $PORT, timeout => $AT_ONCE,
        headers => ['Authorization: Bearer gone'] });
    is($live->{status}, 200, "the IdP answers again: a request with that token passes within ${AT_ONCE}s")
        or diag($live->{error} // $live->{raw});
    is(scalar @{ idp_requests() }, 1, 'with one IdP call');
}

# ---- 2. the client of the request that asks leaves; live clients wait -----------------

{
    idp_setup({ left => [{ mode => 'hang' }, { json => { active => \1, sub => 'bob' } }] });
    my ($misses0, $waits0) = (metric($MISSES), metric($WAITS));
    my $asker = connect_client();
    syswrite($asker, request_bytes('left'));
    ok(wait_for($PATIENCE, sub { @{ idp_requests() } == 1 }), 'the first request asks the IdP, which hangs');

    my $LIVE = 10;
    my @waiting = map { connect_client() } 1 .. $LIVE;
    syswrite($_, request_bytes('left')) for @waiting;
    ok(wait_for($PATIENCE, sub { metric($WAITS) - $waits0 == $LIVE }), "$LIVE live requests wait for it")
        or diag(sprintf('waits %d', metric($WAITS) - $waits0));

    close $asker;
    my $started = time;
    # Read the answers of the waiting clients, each within the short timeout.
    my @answers;
    for my $s (@waiting) {
        $s->blocking(0);
    }
    my %in;
    my $done = wait_for($AT_ONCE, sub {
        for my $i (0 .. $#waiting) {
            next if $answers[$i];
            my $n = sysread($waiting[$i], my $buf, 65536);
            $in{$i} .= $buf if $n;
            my $r = parse_response($in{$i} // '', 'GET', defined $n && $n == 0);
            $answers[$i] = $r if $r->{complete};
        }
        !grep { !$_ } @answers[0 .. $#waiting];
    });
    close $_ for @waiting;
    is(scalar(grep { $_ && $_->{status} == 200 } @answers), $LIVE,
        "the asker's client left: all $LIVE waiting requests pass within ${AT_ONCE}s")
        or diag(sprintf('%d answered in %.1f s: %s', scalar(grep { $_ } @answers), time - $started,
            join(' ', map { $_ ? $_->{status} : '-' } @answers[0 .. $#waiting])));
    is(scalar @{ idp_requests() }, 2, 'after one more IdP call');
}

stop_nginx();
done_testing();
