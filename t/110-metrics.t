# auth_oauth2_token_metrics: counters that equal exactly what happened, over
# two workers and across a reload; output that promtool accepts and a real
# Prometheus server scrapes; $oauth2_token_idp_* in the JSON access-log recipe;
# the client's trace context reaching the IdP, nothing else of the client's.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
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

# The JSON access-log recipe, taken from the file users copy it from.
my $recipe = do {
    open my $fh, '<', 'nginx-conf/json-access-log.conf' or die $!;
    local $/;
    my $text = <$fh>;
    $text =~ /# --- recipe: JSON access log\n(.*?)\n\s*# --- end of recipe/s or die 'no recipe block';
    $1;
};

my $http = <<CONF;
auth_oauth2_token_introspect_cache zone=tokens:1m;
auth_oauth2_token_client_id gw;
auth_oauth2_token_introspect_endpoint /_introspect;
$recipe
server {
    listen 127.0.0.1:$METRICS_PORT reuseport;
    location = /metrics { auth_oauth2_token_metrics; }
    location = /nothing { return 204; }
}
CONF

my $config = <<'CONF';
access_log logs/access.json oauth2_json;
location /a/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_scope read;
    add_header X-Pid $pid always;
    proxy_pass http://backend;
}
location /aud/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_audience orders;
    proxy_pass http://backend;
}
location = /_introspect {
    internal;
    proxy_pass http://idp/introspect;
    proxy_read_timeout 500ms;
}
CONF

sub get {
    my ($uri, @headers) = @_;
    return http_request(raw_request('GET', $uri, [@headers]))->{status};
}

sub scrape {
    my $r = http_request({ method => 'GET', uri => '/metrics', port => $METRICS_PORT });
    return $r;
}

# The value of one series in a scrape, or undef.
sub value_of {
    my ($text, $series) = @_;
    for my $line (split /\n/, $text) {
        return $1 if $line =~ /^\Q$series\E (\S+)$/;
    }
    return undef;
}

my %idp = (
    good => { json => { active => \1, scope => 'read', sub => 'alice' } },
    bad => { json => { active => \0 } },
    narrow => { json => { active => \1, scope => 'write' } },
    other => { json => { active => \1, scope => 'read', aud => 'billing' } },
    err => { status => 500, json => { error => 'boom' } },
    slow => { delay => 2, json => { active => \1 } },
);

idp_setup(\%idp);
my $block = block_from(name => 'metrics', workers => 2, http_config => $http, config => $config);
start_nginx($block) or BAIL_OUT('nginx');

# A known sequence of requests.
is(get('/a/x'), 401, 'no token');
is(get('/a/x', 'Authorization: Bearer bad'), 401, 'inactive');
is(get('/a/x', 'Authorization: Bearer good'), 200, 'allowed, from the IdP');
is(get('/a/x', 'Authorization: Bearer narrow'), 403, 'insufficient scope');
is(get('/aud/x', 'Authorization: Bearer other'), 401, 'wrong audience');
is(get('/a/x', 'Authorization: Bearer err'), 502, 'IdP error');
is(get('/a/x', 'Authorization: Bearer slow'), 504, 'IdP timeout');
# Cache hits on new connections until both workers have served one.
my (%pids, $hits);
for (1 .. 200) {
    my $r = http_request(raw_request('GET', '/a/x', ['Authorization: Bearer good']));
    $hits++;
    my ($pid) = map { $_->[1] } grep { lc $_->[0] eq 'x-pid' } @{ $r->{headers} };
    $pids{$pid}++ if $pid;
    last if keys %pids > 1;
}
is(scalar keys %pids, 2, "cache hits served by both workers ($hits requests)");

my %expected = (
    'oauth2_token_requests_total{phase="access",outcome="allowed"}' => 1 + $hits,
    'oauth2_token_requests_total{phase="access",outcome="no_token"}' => 1,
    'oauth2_token_requests_total{phase="access",outcome="invalid_token"}' => 1,
    'oauth2_token_requests_total{phase="access",outcome="insufficient_scope"}' => 1,
    'oauth2_token_requests_total{phase="access",outcome="audience"}' => 1,
    'oauth2_token_requests_total{phase="access",outcome="idp_error"}' => 1,
    'oauth2_token_requests_total{phase="access",outcome="idp_timeout"}' => 1,
    'oauth2_token_requests_total{phase="preaccess",outcome="allowed"}' => 0,
    'oauth2_token_cache_lookups_total{zone="tokens",result="hit"}' => $hits,
    'oauth2_token_cache_lookups_total{zone="tokens",result="miss"}' => 6,
    'oauth2_token_cache_lookups_total{zone="tokens",result="expired"}' => 0,
    'oauth2_token_idp_requests_total{endpoint="/_introspect",kind="introspection",result="2xx"}' => 4,
    'oauth2_token_idp_requests_total{endpoint="/_introspect",kind="introspection",result="5xx"}' => 1,
    'oauth2_token_idp_requests_total{endpoint="/_introspect",kind="introspection",result="timeout"}' => 1,
    'oauth2_token_idp_request_duration_seconds_count{endpoint="/_introspect",kind="introspection"}' => 6,
    'oauth2_token_idp_request_duration_seconds_bucket{endpoint="/_introspect",kind="introspection",le="+Inf"}' => 6,
    'oauth2_token_idp_request_duration_seconds_bucket{endpoint="/_introspect",kind="introspection",le="0.25"}' => 5,
    'oauth2_token_cache_entries{zone="tokens"}' => 3,
    'oauth2_token_cache_size_bytes{zone="tokens"}' => 1048576,
    'oauth2_token_cache_evictions_total{zone="tokens"}' => 0,
);

my $r = scrape();
is($r->{status}, 200, 'scrape: 200');
my ($ctype) = map { $_->[1] } grep { lc $_->[0] eq 'content-type' } @{ $r->{headers} };
is($ctype, 'text/plain; version=0.0.4; charset=utf-8', 'scrape: the text format 0.0.4');
for my $series (sort keys %expected) {
    is(value_of($r->{body}, $series), $expected{$series}, "counts: $series");
}
my $sum = value_of($r->{body}, 'oauth2_token_idp_request_duration_seconds_sum{endpoint="/_introspect",kind="introspection"}');
ok(defined $sum && $sum >= 0.5 && $sum < 10, "the duration sum includes the 0.5 s timeout ($sum)");

# promtool accepts the page.
SKIP: {
    my ($promtool) = grep { -x } map { "$_/promtool" } split /:/, $ENV{PATH};
    skip 'promtool is not installed (make deps installs prometheus)', 1 unless $promtool;
    my $dir = tempdir(CLEANUP => 1);
    open my $fh, '>', "$dir/scrape.txt" or die;
    print $fh $r->{body};
    close $fh;
    my $out = `$promtool check metrics < $dir/scrape.txt 2>&1`;
    is($?, 0, 'promtool check metrics accepts the page') or diag($out);
}

# A reload keeps the counts.
ok(reload_nginx($block), 'reload');
my $after = scrape()->{body};
for my $series (grep { !/cache_entries|size_bytes/ } sort keys %expected) {
    is(value_of($after, $series), $expected{$series}, "after reload: $series");
}

# The JSON access-log recipe logs the IdP call's status and duration.
{
    open my $fh, '<', prefix() . '/logs/access.json' or die $!;
    my @lines = map { decode_json($_) } grep { /\S/ } <$fh>;
    my ($first_good) = grep { $_->{sub} eq 'alice' } @lines;
    is($first_good->{cache}, 'MISS', 'json log: the first good request missed');
    is($first_good->{idp_status}, '200', 'json log: and shows the IdP status');
    like($first_good->{idp_seconds}, qr/^\d+\.\d{3}$/, 'json log: and the IdP duration');
    my ($hit) = grep { $_->{cache} eq 'HIT' } @lines;
    is_deeply([@$hit{qw(idp_status idp_seconds)}], ['', ''], 'json log: a cache hit has no IdP call');
    my ($timeout) = grep { $_->{error} eq 'idp_timeout' } @lines;
    is($timeout->{status}, 504, 'json log: the timeout, with its reason');
}

# The client's trace context reaches the IdP; its cookies and token header do not.
idp_setup({ t => { json => { active => \1, scope => 'read' } } });
my $traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
is(get('/a/trace', 'Authorization: Bearer t', "traceparent: $traceparent", 'tracestate: vendor=abc',
    'Cookie: session=secret'), 200, 'trace: allowed');
my ($call) = @{ idp_requests() };
my %h = map { (lc $_->[0] => $_->[1]) } @{ $call->{headers} };
is($h{traceparent}, $traceparent, 'trace: traceparent reached the IdP unchanged');
is($h{tracestate}, 'vendor=abc', 'trace: and tracestate');
ok(!exists $h{cookie}, "trace: the client's Cookie did not");
isnt($h{authorization} // '', 'Bearer t', "trace: nor the client's Authorization");

# A real Prometheus server scrapes the page and answers a query for a counter.
SKIP: {
    my ($prometheus) = grep { -x } map { "$_/prometheus" } split /:/, $ENV{PATH};
    skip 'prometheus is not installed (make deps installs it)', 1 unless $prometheus;
    my $dir = tempdir(CLEANUP => 1);
    my $port = free_port();
    open my $fh, '>', "$dir/prometheus.yml" or die;
    print $fh <<YML;
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: gateway
    static_configs: [ { targets: ['127.0.0.1:$METRICS_PORT'] } ]
YML
    close $fh;
    my $pid = fork // die;
    if (!$pid) {
        open STDOUT, '>', "$dir/prometheus.log";
        open STDERR, '>&', \*STDOUT;
        exec $prometheus, "--config.file=$dir/prometheus.yml", "--storage.tsdb.path=$dir/data",
            "--web.listen-address=127.0.0.1:$port";
        exit 127;
    }
    my $want = $expected{'oauth2_token_requests_total{phase="access",outcome="allowed"}'} + 1;
    my ($answer, $deadline) = ('', time + 120);
    while (time < $deadline) {
        my $q = http_request({ method => 'GET', port => $port,
            uri => '/api/v1/query?query=oauth2_token_requests_total%7Boutcome%3D%22allowed%22%2Cphase%3D%22access%22%7D' });
        $answer = $q->{body} // '';
        last if $answer =~ /"value":\[[\d.]+,"$want"\]/;
        sleep 0.25;
    }
    like($answer, qr/"value":\[[\d.]+,"$want"\]/, "prometheus: a query for the allowed counter answers $want")
        or diag(`tail -5 $dir/prometheus.log`);
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

stop_nginx();
done_testing();
