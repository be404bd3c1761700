# Issue 22 item 6: one IdP answer must not lock an endpoint for every user.
# A 503 with a huge Retry-After opens the breaker for at most `open`; 429s
# (a flood of junk tokens that gets the gateway rate-limited), with or
# without Retry-After, never open it; a reload closes it; the requests an
# open breaker refuses are logged once per interval, not once each; the
# metrics page shows each breaker's state and openings. Two workers share
# the breaker, its log gate and its metrics.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use IO::Socket::INET;
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);

start_servers();

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 1) or die $!;
    my $port = $s->sockport;
    close $s;
    return $port;
}
my $METRICS_PORT = free_port();

my $http = <<CONF;
server {
    listen 127.0.0.1:$METRICS_PORT reuseport;
    location = /metrics { auth_oauth2_token_metrics; }
}
CONF

sub config {
    my ($breaker) = @_;
    return <<CONF;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_breaker $breaker;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF
}

# "STATUS" or "STATUS retry=N" (the client's Retry-After).
sub get {
    my ($token) = @_;
    my $r = http_request(raw_request('GET', '/', ["Authorization: Bearer $token"]));
    my ($retry) = map { $_->[1] } grep { lc $_->[0] eq 'retry-after' } @{ $r->{headers} };
    return "$r->{status}" . (defined $retry ? " retry=$retry" : '');
}
sub calls { scalar @{ idp_requests() } }

# The values of the introspection breaker's two series on the metrics page.
sub breaker_metrics {
    my $r = http_request({ method => 'GET', uri => '/metrics', port => $METRICS_PORT });
    my %v;
    for my $family (qw(oauth2_token_breaker_open oauth2_token_breaker_openings_total)) {
        my @lines = $r->{body} =~ /^\Q$family\E\{server="[0-9a-f]{16}",endpoint="\/_introspect",kind="introspection"\} (\d+)$/mg;
        $v{$family} = @lines == 1 ? $lines[0] : 'missing';
    }
    return "open=$v{oauth2_token_breaker_open} openings=$v{oauth2_token_breaker_openings_total}";
}

sub count_lines {
    my ($re) = @_;
    return scalar grep { /$re/ } split /\n/, error_log_text();
}

# 1. A 503 with Retry-After: 100000000 opens the breaker for `open` (2 s),
# not for three years; then one probe closes it.
idp_setup({ busy => [{ status => 503, body => 'busy', headers => { 'Retry-After' => '100000000' } },
                     { json => { active => \1 } }] });
start_nginx(block_from(name => 'huge retry-after', workers => 2, http_config => $http,
    config => config('failures=3 window=10s open=2s'))) or BAIL_OUT('nginx');
is(breaker_metrics(), 'open=0 openings=0', 'metrics: a closed breaker, never opened');
is(get('busy'), '503', 'the IdP says 503 with Retry-After: 100000000');
my $opened = time;
my $refused = get('busy');
like($refused, qr/^503 retry=\d+$/, 'open: 503 with Retry-After');
my ($retry) = $refused =~ /retry=(\d+)/;
ok(defined $retry && $retry <= 2, "the client's Retry-After is at most open=2s (got $refused)");
is(calls(), 1, 'open: the IdP was not asked');
is(breaker_metrics(), 'open=1 openings=1', 'metrics: open, opened once');
like(error_log_text(), qr/circuit breaker of the IdP endpoint opened for 2 s \(503 with Retry-After: 100000000, capped at open\): "\/_introspect"/,
    'the opening is logged with the capped time and the IdP\'s ask');
sleep 0.05 while time < $opened + 2.2;
is(get('busy'), '200', 'after open=2s the probe goes to the IdP and passes');
is(calls(), 2, 'one probe call');
is(breaker_metrics(), 'open=0 openings=1', 'metrics: closed again, opened once');
stop_nginx();

# 2. A flood of junk tokens the IdP answers with 429, without Retry-After,
# then with a huge one (each in a fresh nginx): the breaker stays closed
# and a valid token passes.
for my $case (['without Retry-After', {}], ['with Retry-After: 100000000', { 'Retry-After' => '100000000' }]) {
    my ($name, $headers) = @$case;
    my %junk = map { ("junk$_" => { status => 429, json => { error => 'slow_down' }, headers => $headers }) } 1 .. 20;
    idp_setup({ %junk, good => { json => { active => \1 } } });
    start_nginx(block_from(name => "429 flood $name", workers => 2, http_config => $http,
        config => config('failures=3 window=10s open=60s'))) or BAIL_OUT('nginx');
    my @statuses = map { get("junk$_") } 1 .. 20;
    is(scalar(grep { /^502$/ } @statuses), 20,
        "429 $name: each fails only its own request (502, no Retry-After from a breaker)")
        or diag("@statuses");
    is(get('good'), '200', "429 $name: after 20 of them a valid token still reaches the IdP and passes");
    is(calls(), 21, "429 $name: the IdP was asked every time");
    is(breaker_metrics(), 'open=0 openings=0', "429 $name: metrics: never opened");
    is(count_lines(qr/circuit breaker of the IdP endpoint opened/), 0, "429 $name: no opening logged");
    stop_nginx();
}

# 3. Failures open it for a long `open` (60 s); the requests it refuses are
# logged once per interval, across both workers; a reload closes it and
# keeps the count of openings.
idp_setup({ down => { status => 500, body => 'boom' }, good => { json => { active => \1 } } });
start_nginx(block_from(name => 'reload closes', workers => 2, http_config => $http,
    config => config('failures=3 window=10s open=60s'))) or BAIL_OUT('nginx');
is(get('down'), '502', "failure $_") for 1 .. 3;
like(get('good'), qr/^503 retry=(60|59)$/, 'open for 60 s: a valid token is refused too');
my @refusals = map { get('good') } 1 .. 30;
is(scalar(grep { /^503 retry=/ } @refusals), 30, '30 more refusals');
is(calls(), 3, 'the IdP was not asked while open');
is(breaker_metrics(), 'open=1 openings=1', 'metrics: open');
is(count_lines(qr/not asked: its circuit breaker is open/), 1,
    '31 refusals, one error-log line (one per endpoint per 10 s)');
like(error_log_text(), qr/IdP endpoint "\/_introspect" not asked: its circuit breaker is open \(retry in \d+ s\); such refusals are logged once per 10 s/,
    'the line names the endpoint and the interval');
ok(reload_nginx(), 'reload with the same configuration');
is(get('good'), '200', 'after the reload the breaker is closed: the IdP is asked');
is(calls(), 4, 'one call');
is(breaker_metrics(), 'open=0 openings=1', 'metrics: closed after the reload, the opening still counted');
stop_nginx();

# The page with breakers still passes promtool.
SKIP: {
    my ($promtool) = grep { -x } map { "$_/promtool" } split /:/, $ENV{PATH};
    skip 'promtool is not installed (make deps installs prometheus)', 1 unless $promtool;
    start_nginx(block_from(name => 'promtool', http_config => $http,
        config => config('open=2s'))) or BAIL_OUT('nginx');
    my $dir = tempdir(CLEANUP => 1);
    open my $fh, '>', "$dir/scrape.txt" or die $!;
    print $fh http_request({ method => 'GET', uri => '/metrics', port => $METRICS_PORT })->{body};
    close $fh;
    my $out = `$promtool check metrics < $dir/scrape.txt 2>&1`;
    is($?, 0, 'promtool check metrics accepts the page with a breaker') or diag($out);
    stop_nginx();
}

done_testing();
