# A worker killed (SIGKILL) while it applies pushed SETs. 1. gdb stops the
# worker inside the list's change (in the slab allocator, for the
# revocation's new cutoff) and kills it: the push gets no 202, the next
# worker finds the list half-changed and rebuilds it, with a floor that
# refuses every token issued before (fail closed); the transmitter's retry
# is accepted, tokens issued later pass, the next event applies. 2. During a burst of
# pushes, each revoking another user, the workers are killed; nginx starts
# new ones and the revocation list stays usable. The transmitter's retries
# of the pushes that got no answer are accepted (or refused as replays of
# SETs applied before the kill); every user of the burst is refused
# afterwards (by a revocation, or by the floor a repaired list starts with:
# a worker that died in the middle of a change leaves a table the next
# lock holder rebuilds, refusing what was issued before); the next event
# applies; tokens issued after all this pass.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use POSIX ();
use Time::HiRes qw(time sleep);

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
my $BURST = 300;

sub signed { return SsfTest::signed("$dir/t.jwk", "$dir/t.jwks", @_) }
sub disabled {
    my ($who, $jti) = @_;
    return { claims => { iss => $ISS, aud => $AUD, iat => int(time), jti => $jti, events => {
        'https://schemas.openid.net/secevent/risc/event-type/account-disabled' =>
            { subject => { format => 'iss_sub', iss => $ISS, sub => $who } } } } };
}
signed();
my $NOW = int(time);
my %idp = map { ("tok-user-$_" => { json => { active => \1, sub => "user-$_", iss => $ISS, iat => $NOW - 20 } }) }
    1 .. $BURST;
$idp{"tok-$_"} = { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20 } } for qw(carol);
idp_setup(\%idp);

my $config = <<CONF;
location = /ssf { auth_oauth2_token_ssf_push; }
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    auth_oauth2_token_introspect_cache zone=intro:1m max_ttl=60s;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_metrics; }
CONF
my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD keys=$dir/t.jwks;";

# ---- 1. killed inside the change (gdb): the next lock holder rebuilds the list ----
my ($GDB) = grep { -x } map { "$_/gdb" } split /:/, $ENV{PATH};
SKIP: {
    skip 'gdb is not installed (make deps installs it)', 9 unless $GDB;
    start_nginx(block_from(name => 'killed in a change', config => $config, http_config => $http))
        or BAIL_OUT('nginx');
    is(get('tok-user-1'), 200, 'user-1 passes before the event');
    my ($worker) = worker_pids();
    # gdb stops the worker in the slab allocator, which the list calls only
    # inside a marked change (the revocation's new cutoff), and kills it.
    my $out = prefix() . '/gdb.out';
    my $gdb = fork // die "fork: $!";
    if (!$gdb) {
        open STDOUT, '>', $out or die;
        open STDERR, '>&', \*STDOUT or die;
        exec($GDB, '-q', '-nx', '-batch', '-p', $worker, map { ('-ex', $_) }
            'break ngx_slab_alloc_locked', 'echo ATTACHED\n', 'continue', 'echo STOPPED\n', 'kill')
            or POSIX::_exit(127);
    }
    my $deadline = time + 30;
    sleep 0.05 until (OAuth2Test::slurp($out) // '') =~ /ATTACHED/ || time > $deadline;
    my ($set) = signed(disabled('user-1', 'in-change-1'));
    my ($s) = push_set($set, 30);
    $deadline = time + 30;
    sleep 0.05 while waitpid($gdb, POSIX::WNOHANG()) == 0 && time < $deadline;
    like(OAuth2Test::slurp($out) // '', qr/STOPPED/, 'the worker was stopped inside the change and killed');
    isnt($s, 202, 'the push got no 202');
    $deadline = time + 10;
    sleep 0.05 until (grep { $_ != $worker } worker_pids()) || time > $deadline;
    ($s) = push_set($set);
    is($s, 202, 'the transmitter\'s retry is accepted by the new worker');
    like(error_log_text(), qr/zone "ssf" was left half-changed by a worker that died/,
        'the new worker rebuilt the list');
    is(get('tok-user-1'), 401, 'user-1 is refused');
    is(get('tok-user-2'), 401, 'user-2, issued before the rebuild, is refused by its floor (fail closed)');
    my $later = int(time) + 1;
    idp_setup({ %idp, 'tok-user-2-new' => { json => { active => \1, sub => 'user-2', iss => $ISS, iat => $later } } });
    sleep 0.05 while int(time) <= $later;
    is(get('tok-user-2-new'), 200, 'a token issued after the rebuild passes');
    my ($next) = signed(disabled('user-2', 'in-change-2'));
    is((push_set($next))[0], 202, 'the next event is accepted');
    stop_nginx();
    idp_setup(\%idp);
}

# ---- 2. workers killed during a burst of pushes ----
start_nginx(block_from(name => 'killed', config => $config, http_config => $http, workers => 2))
    or BAIL_OUT('nginx');

sub get {
    my ($token) = @_;
    return http_request(raw_request('GET', '/api/', ["Authorization: Bearer $token"]))->{status};
}
sub push_set {
    my ($set, $timeout) = @_;
    my $r = http_request(raw_request('POST', '/ssf', ['Content-Type: application/secevent+jwt'], $set), $timeout // 5);
    return ($r->{status} // 0, $r->{body} // '');
}
sub accepted_lines { scalar(() = error_log_text() =~ /SET accepted/g) }

is(get("tok-user-$_"), 200, "user-$_ passes before the burst") for 1, $BURST;
my @sets = signed(map { disabled("user-$_", "burst-$_") } 1 .. $BURST);

# The burst, from a child process on two connections at a time: each SET's
# status into a file.
my $statuses = "$dir/statuses";
my $child = fork();
die "fork: $!" unless defined $child;
if (!$child) {
    open my $out, '>', $statuses or POSIX::_exit(1);
    $out->autoflush(1);
    for my $i (0 .. $#sets) {
        my ($s) = push_set($sets[$i]);
        print $out "$i $s\n";
    }
    close $out;
    POSIX::_exit(0);
}

# Once the workers are applying SETs, kill them all.
my $deadline = time + 20;
sleep 0.01 while accepted_lines() < 20 && time < $deadline;
my @old = worker_pids();
ok(accepted_lines() >= 20, 'the workers are applying the burst');
kill 'KILL', @old;
note('killed workers ' . join(', ', @old) . ' after ' . accepted_lines() . ' SETs were applied');
waitpid($child, 0);
is($? >> 8, 0, 'the burst ran to its end');

# nginx starts new workers.
$deadline = time + 10;
my @new;
while (time < $deadline) {
    @new = grep { my $p = $_; !grep { $_ == $p } @old } worker_pids();
    last if @new == 2;
    sleep 0.05;
}
is(scalar @new, 2, 'nginx started two new workers');
like(error_log_text(), qr/exited on signal 9/, 'the master saw the workers die');

# The transmitter's retries: every SET without a 202.
my %status = map { split ' ' } split /\n/, OAuth2Test::slurp($statuses) // '';
my @retry = grep { ($status{$_} // 0) != 202 } 0 .. $#sets;
note(scalar(@retry) . ' of the burst\'s pushes got no 202 and are retried');
my %retried;
for my $i (@retry) {
    my ($s, $body) = push_set($sets[$i]);
    my $kind = $s == 202 ? 'accepted' : $s == 400 && $body =~ /received before/ ? 'replay' : "status $s";
    $retried{$kind}++;
}
is(join(',', grep { !/^(accepted|replay)$/ } sort keys %retried), '',
    'every retry is accepted, or refused as a replay of a SET applied before the kill');

# Every user of the burst is refused; the list is usable.
my @refused = grep { get("tok-user-$_") == 401 } 1 .. $BURST;
is(scalar @refused, $BURST, 'every user of the burst is refused');
my $repaired = error_log_text() =~ /zone "ssf" was left half-changed/;
note($repaired ? 'a worker died inside a change of the list: it was rebuilt'
    : 'no worker died inside a change of the list');

# The next event applies; tokens issued after all this pass.
is(get('tok-carol'), $repaired ? 401 : 200, 'carol before her event (401 only under a rebuilt list\'s floor)');
my ($carol) = signed(disabled('carol', 'after-1'));
is((push_set($carol))[0], 202, 'the next event is accepted');
is(get('tok-carol'), 401, 'carol is refused');
my $later = int(time) + 2;
idp_setup({ %idp, map { ("tok-$_-new" => { json => { active => \1, sub => $_, iss => $ISS, iat => $later } }) }
    qw(carol user-1 dave) });
sleep 0.05 while int(time) <= $later;
is(get('tok-dave-new'), 200, 'a token issued after all this passes');
is(get('tok-user-1-new'), 200, 'a burst user\'s token issued after the event passes');
is(get('tok-carol-new'), 200, 'carol\'s token issued after her event passes');
my $m = http_request(raw_request('GET', '/metrics', []))->{body};
my ($held) = $m =~ /^oauth2_token_ssf_revocations (\d+)$/m;
ok(defined $held && $held >= 1, "the list's gauge reads the list (" . ($held // 'none') . ')');

done_testing();
