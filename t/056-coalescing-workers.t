# Coalescing across workers: a burst of concurrent requests for one new token,
# spread over two workers, costs exactly one IdP call. The worker that asks
# marks the key in the shared zone; the other worker's requests wait for the
# answer (a timer, no busy loop) instead of asking too. A failed call frees
# the mark, so the next request asks again.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

start_servers();

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 1) or die $!;
    my $port = $s->sockport;
    close $s;
    return $port;
}
my $PORT = free_port();

# reuseport: every worker has its own listening socket, and the kernel spreads
# new connections over them, so a burst reaches both workers.
my $http = <<CONF;
auth_oauth2_token_introspect_cache zone=tokens:1m;
server {
    listen 127.0.0.1:$PORT reuseport;
    location / {
        auth_oauth2_token_introspect on;
        auth_oauth2_token_introspect_endpoint /_introspect;
        auth_oauth2_token_client_id gw;
        add_header X-Pid \$pid always;
        proxy_pass http://backend;
    }
    location = /_introspect {
        internal;
        proxy_set_header X-Worker \$pid;    # which worker asks
        proxy_pass http://idp/introspect;
    }
}
CONF

sub burst {
    my ($n, $token) = @_;
    return http_requests([ map { { method => 'GET', uri => '/', port => $PORT,
        headers => ["Authorization: Bearer $token"] } } 1 .. $n ]);
}

sub pids { my %p; for my $r (@_) { $p{$_->[1]}++ for grep { lc $_->[0] eq 'x-pid' } @{ $r->{headers} } } return scalar keys %p }

start_nginx(block_from(name => 'two workers', workers => 2, http_config => $http, config => '')) or BAIL_OUT('nginx');

# A burst is spread over both workers by the kernel's hash of each
# connection; a burst that happened to reach one worker proves nothing, so
# another token is tried (a handful of times at most).
my ($spread, @r);
for my $try (1 .. 5) {
    idp_setup({ "new$try" => { delay => 0.5, json => { active => \1, sub => 'alice' } } });
    @r = burst(50, "new$try");
    $spread = pids(@r);
    last if $spread == 2;
}
is($spread, 2, 'the burst reached both workers');
is(scalar(grep { $_->{status} == 200 } @r), 50, 'all 50 requests pass');
is(scalar @{ idp_requests() }, 1, '50 concurrent requests over 2 workers: exactly 1 IdP call');
is(scalar @{ backend_requests() }, 50, 'and all reached the backend');

# A failed call frees the mark: the next request asks again at once.
idp_setup({ bad => [{ status => 500, body => 'boom' }, { json => { active => \1 } }] });
my ($first) = burst(1, 'bad');
is($first->{status}, 502, 'the IdP fails');
my ($second) = burst(1, 'bad');
is($second->{status}, 200, 'the next request is not held back by a stale mark');
is(scalar @{ idp_requests() }, 2, 'and asked the IdP itself');

# The worker that asks killed in the middle of its call (kill -9, as a crash):
# nobody hangs. Its connections are cut; the other worker's requests find its
# mark until the mark's deadline (5 s) and then ask the IdP themselves.
{
    idp_setup({ crash => { delay => 2, json => { active => \1 } } });
    my $pid = fork // die;
    if (!$pid) {
        # Kill the worker that asks, while its call is under way.
        my $deadline = time + 5;
        sleep 0.05 while !@{ idp_requests() } && time < $deadline;
        my ($call) = @{ idp_requests() };
        my ($victim) = map { $_->[1] } grep { lc $_->[0] eq 'x-worker' } @{ $call->{headers} // [] };
        kill 'KILL', $victim if $victim;
        exit 0;
    }
    my $started = time;
    my @r = map { $_ } burst(20, 'crash');
    waitpid $pid, 0;
    my $took = time - $started;
    my @answered = grep { $_->{status} } @r;
    # A hung request would end with the client's own timeout (10 s).
    is(scalar(grep { ($_->{error} // '') =~ /^timeout/ } @r), 0,
        sprintf('nobody hangs: no request ran into the client\'s timeout (the burst took %.1f s)', $took));
    is(scalar(grep { $_->{status} && $_->{status} != 200 } @r), 0, 'every request that was answered passed');
    ok(scalar(@answered) > 0, scalar(@answered) . ' of 20 answered (the killed worker\'s were cut)');
    is(scalar(@{ idp_requests() }), 2, 'the other worker asked again once the dead leader\'s mark ran out');
    ok($took > 4, 'after the mark\'s deadline, not before');
}

stop_nginx();
done_testing();
