# Revocation polled from the IdP (RFC 8936): a gateway of two workers polls
# a Shared Signals transmitter (t/oidc/ssf-poll-transmitter.mjs, its SETs
# signed by t/oidc/ssf-transmitter.mjs with npm `jose`) through an internal
# location, from worker 0 only. A session-revoked for alice queued at the
# transmitter gets her tokens refused (cache hits included) while bob's pass;
# the next poll acknowledges the SET, once. SETs the receiver refuses are
# reported in `setErrs` with their RFC 8935 code and change nothing. With
# the transmitter down the polls back off, logged once, and the next SET
# after it is back is applied, its recovery logged once. nginx -t names the
# configuration mistakes.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use JSON::PP;
use POSIX ();
use Time::HiRes ();

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $JSON = JSON::PP->new->canonical;
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';

sub signed {
    my ($keyfile, @specs) = @_;
    return SsfTest::signed("$dir/$keyfile", "$dir/$keyfile.jwks", @specs);
}

# Polls `cond` every 50 ms until it holds or `secs` pass.
sub wait_until {
    my ($secs, $cond) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $deadline) {
        return 1 if $cond->();
        Time::HiRes::sleep(0.05);
    }
    return $cond->() ? 1 : 0;
}

my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
my $SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
my $n = 0;
sub set_for {
    my ($who, %over) = @_;
    my %c = (iss => $ISS, aud => $AUD, iat => $NOW - 10, jti => 'poll-' . ++$n,
        sub_id => { format => 'iss_sub', iss => $ISS, sub => $who }, events => { $SESSION_REVOKED => {} });
    @c{ keys %over } = values %over;
    return \%c;
}

# The transmitter: its signing key, the token the gateway must present.
signed('transmitter.jwk');
for (['poll-bearer', "poll-token-0123456789abcdef\n"], ['wrong-bearer', "not-the-token-0123456789\n"]) {
    open my $fh, '>', "$dir/$_->[0]" or die $!;
    print $fh $_->[1];
    close $fh;
    chmod 0600, "$dir/$_->[0]";
}
my $TPORT = OAuth2Test::reserve_port();
my $state_file = "$dir/transmitter-state.json";
my $tpid;
sub start_transmitter {
    OAuth2Test::release_port($TPORT);
    $tpid = fork();
    die "fork: $!" unless defined $tpid;
    if (!$tpid) {
        open STDOUT, '>>', "$dir/transmitter.log";
        open STDERR, '>&', \*STDOUT;
        exec $NODE, 't/oidc/ssf-poll-transmitter.mjs', $TPORT, "$dir/poll-bearer", $state_file
            or POSIX::_exit(127);
    }
    wait_until(10, sub { OAuth2Test::can_connect($TPORT) }) or BAIL_OUT('the poll transmitter did not start');
}
sub stop_transmitter { kill 'TERM', $tpid; waitpid($tpid, 0); $tpid = undef }
END { kill 'KILL', $tpid if $tpid }
start_transmitter();

sub queue { SsfTest::poll_queue($TPORT, @_) }
sub tstate { SsfTest::poll_state($TPORT) }

my %idp = map { ("tok-$_" => { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20 } }) }
    qw(alice bob dave erin heidi);
idp_setup(\%idp);

my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
    . " keys=$dir/transmitter.jwk.jwks max_age=2m token_lifetime=1h;";
my $poll_location = <<CONF;
location = /_ssf_poll {
    internal;
    auth_oauth2_token_ssf_poll interval=1s max_events=2 max_size=16k bearer_file=$dir/poll-bearer;
    proxy_set_header X-Worker \$pid;
    proxy_pass http://127.0.0.1:$TPORT/poll;
}
CONF
my $config = <<CONF;
$poll_location
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

start_nginx(block_from(name => 'ssf-poll', config => $config, http_config => $http, workers => 2))
    or BAIL_OUT('nginx');

sub get { http_request(raw_request('GET', $_[0], ["Authorization: Bearer $_[1]"]))->{status} }
sub metric {
    my ($series) = @_;
    my $m = http_request(raw_request('GET', '/metrics', []))->{body};
    return $m =~ /^\Q$series\E (\d+)$/m ? $1 : undef;
}

# 1. Polls arrive, as RFC 8936 asks, before any SET.
ok(wait_until(10, sub { @{ tstate()->{polls} } >= 2 }), 'the gateway polls the transmitter');
my $first = tstate()->{polls}[0];
is($first->{maxEvents}, 2, 'the poll asks for max_events SETs (maxEvents)');
is($first->{returnImmediately}, JSON::PP::true, 'returnImmediately: true by default');
like($first->{contentType} // '', qr{^application/json}, 'the poll is JSON');
ok(!exists $first->{ack} && !exists $first->{setErrs}, 'nothing to acknowledge yet');
is(get('/api/', "tok-$_"), 200, "before the event: ${_}'s token passes (now cached)") for qw(alice bob dave);

# 2. A session-revoked for alice, queued at the transmitter.
my ($alice_set) = signed('transmitter.jwk', { claims => set_for('alice') });
my $queued_at = Time::HiRes::time();
queue('poll-1' => $alice_set);
ok(wait_until(10, sub { get('/api/', 'tok-alice') == 401 }), 'polled session-revoked: alice\'s token is refused');
diag(sprintf('time to revoke by poll (interval=1s): %.0f ms from queued to refused', 1000 * (Time::HiRes::time() - $queued_at)));
is(get('/api/', 'tok-bob'), 200, 'polled session-revoked: bob\'s token passes');
ok(wait_until(10, sub { (tstate()->{acks}{'poll-1'} // 0) >= 1 }), 'the SET is acknowledged by the next poll');
my $polls = @{ tstate()->{polls} };
ok(wait_until(10, sub { @{ tstate()->{polls} } >= $polls + 2 }), 'polls go on');
is(tstate()->{acks}{'poll-1'}, 1, 'the SET was acknowledged once');
is_deeply(tstate()->{queue}, [], 'nothing is left in the queue');

# 3. SETs the receiver refuses: setErrs with their codes; nothing changes.
my ($other_key) = signed('other.jwk', { claims => set_for('dave', jti => 'bad-key') });
my ($wrong_aud) = signed('transmitter.jwk', { claims => set_for('dave', jti => 'bad-aud', aud => 'https://other.test') });
my ($under_other_jti) = signed('transmitter.jwk', { claims => set_for('dave', jti => 'inner') });
queue('bad-key' => $other_key, 'bad-aud' => $wrong_aud, 'outer' => $under_other_jti);
ok(wait_until(10, sub { keys %{ tstate()->{errs} } >= 3 }), 'the refused SETs are reported in setErrs');
my $errs = tstate()->{errs};
is($errs->{'bad-key'}{err}, 'invalid_key', 'another key: invalid_key');
is($errs->{'bad-aud'}{err}, 'invalid_audience', 'a wrong aud: invalid_audience');
is($errs->{outer}{err}, 'invalid_request', 'a SET under another jti: invalid_request');
ok(length($errs->{$_}{description} // ''), "$_: a description") for qw(bad-key bad-aud outer);
ok(!exists tstate()->{acks}{$_}, "$_ is not acknowledged") for qw(bad-key bad-aud outer);
is(get('/api/', 'tok-dave'), 200, 'after the refused SETs dave\'s token still passes');

# 4. Three SETs at once with max_events=2: all applied.
my @more = map { signed('transmitter.jwk', { claims => set_for($_, jti => "more-$_") }) } qw(carol frank grace);
queue('more-carol' => $more[0], 'more-frank' => $more[1], 'more-grace' => $more[2]);
ok(wait_until(10, sub { my $a = tstate()->{acks}; 3 == grep { $a->{"more-$_"} } qw(carol frank grace) }),
    'three SETs, two per poll: all acknowledged');

# 5. Only one worker polls (worker 0), though there are two.
{
    my @workers = worker_pids();
    is(scalar @workers, 2, 'two workers');
    my %by = map { ($_->{worker} // 'none') => 1 } @{ tstate()->{polls} };
    is(scalar(keys %by), 1, 'every poll came from one worker');
    my ($pid) = keys %by;
    ok((grep { $_ == $pid } @workers), 'a worker of this nginx');
}

# 6. The transmitter down: the polls fail, logged once; back: recovery.
stop_transmitter();
ok(wait_until(15, sub { (metric('oauth2_token_ssf_polls_total{result="unavailable"}') // 0) >= 3 }),
    'with the transmitter down, polls fail (and go on, backing off)');
my @down = error_log_text() =~ /SSF poll failed/g;
is(scalar @down, 1, 'the outage is logged once');
start_transmitter();
my ($erin_set) = signed('transmitter.jwk', { claims => set_for('erin', jti => 'after') });
queue('after' => $erin_set);
ok(wait_until(20, sub { get('/api/', 'tok-erin') == 401 }), 'back: the next SET is applied');
my @back = error_log_text() =~ /SSF poll: the transmitter answers again/g;
is(scalar @back, 1, 'the recovery is logged once');

# 7. Answers that are not poll answers, and a transmitter that fails: each
# poll fails and changes nothing, one outage logged; then a SET is applied.
my @workers_before = sort { $a <=> $b } worker_pids();
my %failed_before = map { ($_ => metric("oauth2_token_ssf_polls_total{result=\"$_\"}") // 0) } qw(malformed unavailable);
for my $case (['garbage', 'malformed', 'not JSON'], ['huge', 'malformed', 'larger than max_size'],
        ['error', 'unavailable', 'a 503']) {
    my ($mode, $result, $name) = @$case;
    SsfTest::poll_control($TPORT, 'POST', '/_mode', $JSON->encode({ mode => $mode }));
    my $want = ++$failed_before{$result};
    ok(wait_until(20, sub { (metric("oauth2_token_ssf_polls_total{result=\"$result\"}") // 0) >= $want }),
        "an answer $name: the poll fails ($result)");
}
SsfTest::poll_control($TPORT, 'POST', '/_mode', $JSON->encode({ mode => 'normal' }));
my ($heidi_set) = signed('transmitter.jwk', { claims => set_for('heidi', jti => 'after-garbage') });
queue('after-garbage' => $heidi_set);
ok(wait_until(40, sub { get('/api/', 'tok-heidi') == 401 }), 'a SET after the failed polls is applied');
is_deeply([sort { $a <=> $b } worker_pids()], \@workers_before, 'no worker died on the way');
@down = error_log_text() =~ /SSF poll failed/g;
is(scalar @down, 2, 'the second outage is logged once too');
like(error_log_text(), qr/SSF poll failed: the answer is not a JSON object/, 'its cause is logged');
is(get('/api/', 'tok-dave'), 200, 'dave\'s token still passes');

# 8. A wrong bearer token (read again by a reload): the transmitter refuses.
rename "$dir/poll-bearer", "$dir/poll-bearer.good";
rename "$dir/wrong-bearer", "$dir/poll-bearer";
ok(reload_nginx(), 'reload with a wrong bearer token');
ok(wait_until(20, sub { (metric('oauth2_token_ssf_polls_total{result="refused"}') // 0) >= 1 }),
    'the transmitter refuses the poll (401): counted as refused');
ok((grep { $_->{refused} } @{ tstate()->{polls} }), 'the transmitter saw the wrong token');
is(get('/api/', 'tok-alice'), 401, 'after the reload alice\'s token is still refused');

ok((metric('oauth2_token_ssf_polls_total{result="ok"}') // 0) >= 3, 'metrics: polls ok');
is(metric('oauth2_token_ssf_deliveries_total{result="accepted"}'), 6, 'metrics: polled SETs accepted');
is(metric('oauth2_token_ssf_deliveries_total{result="invalid_key"}'), 1, 'metrics: a polled SET refused');
unlike(join('', grep { /auth_oauth2_token/ } split /^/m, error_log_text()), qr/alice|heidi|poll-token|not-the-token/,
    'the module\'s log lines never name the subject nor the token');

stop_nginx();

# 9. Long polling (return_immediately=off): the transmitter holds each poll
# until it has a SET (or 2 s); the next poll starts when one ends (interval=2s
# from the start of the last), and a SET queued while a poll is held comes
# back with it at once.
rename "$dir/poll-bearer", "$dir/wrong-bearer";
rename "$dir/poll-bearer.good", "$dir/poll-bearer";
(my $long_config = $config) =~ s/interval=1s max_events=2/interval=2s max_events=2 return_immediately=off/;
start_nginx(block_from(name => 'ssf-long-poll', config => $long_config, http_config => $http, workers => 2))
    or BAIL_OUT('nginx');
my $seen = @{ tstate()->{polls} };
ok(wait_until(10, sub { @{ tstate()->{polls} } > $seen + 1 }), 'long polling: the gateway polls again when a held poll ends');
is(tstate()->{polls}[-1]{returnImmediately}, JSON::PP::false, 'returnImmediately: false');
my ($ivan_set) = signed('transmitter.jwk', { claims => set_for('dave', jti => 'long-poll') });
my $long_at = Time::HiRes::time();
queue('long-poll' => $ivan_set);
ok(wait_until(10, sub { get('/api/', 'tok-dave') == 401 }), 'long polling: the SET is applied');
diag(sprintf('time to revoke by long poll: %.0f ms from queued to refused', 1000 * (Time::HiRes::time() - $long_at)));
ok(wait_until(10, sub { (tstate()->{acks}{'long-poll'} // 0) == 1 }), 'long polling: the SET is acknowledged');
stop_nginx();

# 10. Configuration mistakes fail nginx -t, naming the directive.
for my $case (
    ['a poll without a receiver', '', "location = /p { auth_oauth2_token_ssf_poll; proxy_pass http://127.0.0.1:$TPORT; }",
        'needs "auth_oauth2_token_ssf_receiver"'],
    ['a regex location', $http, "location ~ ^/p { auth_oauth2_token_ssf_poll; proxy_pass http://127.0.0.1:$TPORT; }",
        'a location with a plain path'],
    ['a bad interval', $http, "location = /p { auth_oauth2_token_ssf_poll interval=0; proxy_pass http://127.0.0.1:$TPORT; }",
        'invalid "interval=0"'],
    ['keys fetched without a keys zone', "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys_request=/_ssf_jwks max_age=2m token_lifetime=1h;",
        "location = /p { auth_oauth2_token_ssf_poll; proxy_pass http://127.0.0.1:$TPORT; }",
        'needs "auth_oauth2_token_jwt_keys_cache" here'],
    ['two polls', $http, "location = /p { auth_oauth2_token_ssf_poll; proxy_pass http://127.0.0.1:$TPORT; }"
        . " location = /q { auth_oauth2_token_ssf_poll; proxy_pass http://127.0.0.1:$TPORT; }", 'is duplicate'],
) {
    my ($name, $http_config, $config, $words) = @$case;
    my $out = OAuth2Test::run_must_die(block_from(name => $name, config => $config, http_config => $http_config));
    like($out, qr/auth_oauth2_token_ssf_poll.*\Q$words\E/, "nginx -t: $name");
}

done_testing();
