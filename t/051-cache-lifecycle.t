# The introspection cache over time and across processes: TTLs, exp,
# isolation between policies, a full zone, reload, two workers, and what the
# zone's shared memory holds.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

start_servers();

my $ZONE = 'auth_oauth2_token_introspect_cache zone=tokens:1m';

sub location {
    my (%o) = @_;
    my $endpoint = $o{endpoint} // '/_introspect';
    my $client = $o{client} // 'gw';
    my $extra = $o{extra} // '';
    my $content = $o{content} // 'proxy_pass http://backend;';
    return <<CONF;
location $o{path} {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint $endpoint;
    auth_oauth2_token_client_id $client;
    add_header X-Cache \$oauth2_token_cache_status always;
    add_header X-Pid \$pid always;
    $extra
    $content
}
CONF
}

my $INTERNAL = <<'CONF';
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_introspect2 { internal; proxy_pass http://idp/introspect-other; }
CONF

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    my ($pid) = map { $_->[1] } grep { lc $_->[0] eq 'x-pid' } @{ $r->{headers} };
    return ($r->{status}, $cache // '', $pid // '');
}

sub calls { scalar @{ idp_requests() } }

sub run (&$) {
    my ($code, $block) = @_;
    start_nginx($block) or return;
    $code->();
    stop_nginx();
}

# 1. max_ttl bounds an entry's life.
idp_setup({ t => { json => { active => \1, sub => 'alice' } } });
run {
    is_deeply([(get('/a', 't'))[0, 1]], [200, 'MISS'], 'max_ttl: first request misses');
    is_deeply([(get('/a', 't'))[0, 1]], [200, 'HIT'], 'max_ttl: second request hits');
    sleep 1.3;
    is_deeply([(get('/a', 't'))[0, 1]], [200, 'EXPIRED'], 'max_ttl: after 1s the entry has expired');
    is(calls(), 2, 'max_ttl: two IdP calls');
} block_from(name => 'max_ttl', http_config => "$ZONE max_ttl=1s;",
    config => location(path => '/a') . $INTERNAL);

# 2. exp bounds it too, even when max_ttl is long.
idp_setup({ t => { json => { active => \1, exp => int(time) + 2 } } });
run {
    is((get('/a', 't'))[1], 'MISS', 'exp: miss');
    is((get('/a', 't'))[1], 'HIT', 'exp: hit before exp');
    sleep 2.2;
    is((get('/a', 't'))[1], 'EXPIRED', 'exp: expired after exp, long before max_ttl');
    is(calls(), 2, 'exp: two IdP calls');
} block_from(name => 'exp', http_config => "$ZONE max_ttl=300s;",
    config => location(path => '/a') . $INTERNAL);

# 3. Another endpoint or another client id never gets a cached verdict.
idp_setup({ t => { json => { active => \1 } } });
run {
    is((get('/a', 't'))[1], 'MISS', 'isolation: /a misses');
    is((get('/a', 't'))[1], 'HIT', 'isolation: /a hits');
    is((get('/other-endpoint', 't'))[1], 'MISS', 'isolation: another endpoint misses');
    is((get('/other-client', 't'))[1], 'MISS', 'isolation: another client id misses');
    is((get('/same-policy', 't'))[1], 'HIT', 'isolation: the same endpoint and client share');
    is(calls(), 3, 'isolation: three IdP calls');
    my @paths = map { $_->{path} } @{ idp_requests() };
    is_deeply([sort @paths], [sort qw(/introspect /introspect /introspect-other)], 'isolation: endpoints asked');
} block_from(name => 'isolation', http_config => "$ZONE;",
    config => location(path => '/a') . location(path => '/same-policy')
        . location(path => '/other-endpoint', endpoint => '/_introspect2')
        . location(path => '/other-client', client => 'other-gw') . $INTERNAL);

# 4. negative_ttl: one IdP call per period for an inactive token.
idp_setup({ t => { json => { active => \0 } } });
run {
    is((get('/a', 't'))[0], 401, "negative_ttl: request $_ refused") for 1 .. 3;
    is(calls(), 1, 'negative_ttl: one IdP call within the period');
    sleep 1.2;
    is((get('/a', 't'))[0], 401, 'negative_ttl: refused after the period');
    is(calls(), 2, 'negative_ttl: asked again after the period');
} block_from(name => 'negative_ttl', http_config => "$ZONE negative_ttl=1s;",
    config => location(path => '/a') . $INTERNAL);

# 5. Reload keeps the zone and its entries.
idp_setup({ t => { json => { active => \1 } } });
{
    my $block = block_from(name => 'reload', http_config => "$ZONE;",
        config => location(path => '/a') . $INTERNAL);
    run {
        is((get('/a', 't'))[1], 'MISS', 'reload: miss before');
        ok(reload_nginx($block), 'reload: new workers are up');
        is((get('/a', 't'))[1], 'HIT', 'reload: hit after reload');
        is(calls(), 1, 'reload: one IdP call in all');
    } $block;
}

# 5b. A reload that changes the claim_set list does not reuse entries, which
# keep claim values by position: the same count, another order.
idp_setup({ t => { json => { active => \1, tenant => 'acme', role => 'admin' } } });
{
    my $claims = sub {
        my ($first, $second) = @_;
        return "$ZONE;\nauth_oauth2_token_claim_set \$c1 $first;\nauth_oauth2_token_claim_set \$c2 $second;\n";
    };
    my $extra = 'add_header X-C1 $c1 always;';
    my $before = block_from(name => 'reload claims', http_config => $claims->('tenant', 'role'),
        config => location(path => '/a', extra => $extra) . $INTERNAL);
    my $after = block_from(name => 'reload claims', http_config => $claims->('role', 'tenant'),
        config => location(path => '/a', extra => $extra) . $INTERNAL);
    my $c1 = sub {
        my $r = http_request(raw_request('GET', '/a', ['Authorization: Bearer t']));
        return join ',', map { $_->[1] } grep { lc $_->[0] eq 'x-c1' } @{ $r->{headers} };
    };
    run {
        is($c1->(), 'acme', 'reload with reordered claims: $c1 is the tenant before');
        is($c1->(), 'acme', 'reload with reordered claims: and on a hit');
        ok(reload_nginx($after), 'reload with reordered claims: new workers are up');
        is($c1->(), 'admin', 'reload with reordered claims: $c1 is the role after, not a stale value');
        is(calls(), 2, 'reload with reordered claims: the IdP was asked again');
    } $before;
}

# 6. Two workers share one zone.
idp_setup({ t => { json => { active => \1 } } });
run {
    my ($status, $cache, $first_pid) = get('/a', 't');
    is($cache, 'MISS', 'workers: first request misses');
    my ($other_cache, $other_pid);
    for (1 .. 200) {
        my (undef, $c, $p) = get('/a', 't');
        if ($p ne $first_pid) { ($other_cache, $other_pid) = ($c, $p); last }
    }
    ok(defined $other_pid, 'workers: the other worker served a request');
    is($other_cache, 'HIT', 'workers: the other worker hits the entry the first stored');
    is(calls(), 1, 'workers: one IdP call');
} block_from(name => 'workers', workers => 2, http_config => "$ZONE;",
    config => location(path => '/a') . $INTERNAL);

# 7. The zone holds digests, not tokens: read the worker's mapping of it.
my $token = 'ScanForThisRawToken-' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);
my $subject = 'scan-subject-' . int(rand(1e9));
idp_setup({ $token => { json => { active => \1, sub => $subject } } });
run {
    is((get('/a', $token))[1], 'MISS', 'scan: cached');
    is((get('/a', $token))[1], 'HIT', 'scan: served from the cache');
    my ($worker) = worker_pids();
    my $zone = read_zone($worker, 1024 * 1024);
    ok(defined $zone, 'scan: found the 1m zone in the worker') or return;
    ok(index($zone, $subject) >= 0, 'scan: the zone holds the cached claims (the scan reads the right memory)');
    is(index($zone, $token), -1, 'scan: the raw token is not in shared memory');
    is(index($zone, substr($token, 0, 16)), -1, 'scan: nor a part of it');
} block_from(name => 'scan', http_config => "$ZONE;", config => location(path => '/a') . $INTERNAL);

sub read_zone {
    my ($pid, $size) = @_;
    no warnings 'portable';    # 64-bit addresses
    open my $maps, '<', "/proc/$pid/maps" or return undef;
    while (my $line = <$maps>) {
        my ($from, $to, $perms, $name) = $line =~ /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/ or next;
        next unless hex($to) - hex($from) == $size && $perms =~ /^rw.s/;
        open my $mem, '<:raw', "/proc/$pid/mem" or return undef;
        sysseek($mem, hex($from), 0) or return undef;
        my $data = '';
        sysread($mem, $data, $size) == $size or return undef;
        return $data;
    }
    return undef;
}

# 8. A zone of the minimum size fed 20,000 distinct tokens keeps working.
# An nginx server answers as the IdP here (on the otherwise unused port) so
# that 20,000 introspections take seconds; its access log counts the calls.
my $fast_idp = <<'CONF';
auth_oauth2_token_introspect_cache zone=tiny:32k;
server {
    listen 127.0.0.1:$TEST_NGINX_CLOSED_PORT;
    location = /introspect {
        access_log logs/fast_idp.log;
        default_type application/json;
        return 200 '{"active":true,"sub":"many"}';
    }
}
CONF
my $fast_internal = <<'CONF';
location = /_introspect { internal; proxy_pass http://127.0.0.1:$TEST_NGINX_CLOSED_PORT/introspect; }
CONF
sub fast_idp_calls {
    open my $fh, '<', prefix() . '/logs/fast_idp.log' or return 0;
    my @lines = <$fh>;
    return scalar @lines;
}
run {
    my $sock;
    my ($ok, $n) = (0, 20_000);
    for my $i (1 .. $n) {
        $sock //= IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port(), Timeout => 10)
            or last;
        print $sock "GET /a HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer tok-$i\r\n\r\n";
        my ($status, $close) = read_keepalive_response($sock);
        $ok++ if $status == 200;
        if ($close) { close $sock; undef $sock }
    }
    is($ok, $n, "small zone: all $n requests with distinct tokens succeed");
    is(fast_idp_calls(), $n, 'small zone: each new token asked the IdP once');
    is((get('/a', "tok-$n"))[1], 'HIT', 'small zone: the most recent token still hits');
    is((get('/a', 'tok-' . ($n - 5)))[1], 'HIT', 'small zone: a recent token still hits');
    is((get('/a', 'tok-1'))[1], 'MISS', 'small zone: the oldest token was evicted');
    is(fast_idp_calls(), $n + 1, 'small zone: only the evicted token asked again');
    my $log = error_log_text();
    unlike($log, qr/ngx_slab_alloc\(\) failed|\[(crit|alert|emerg)\]/, 'small zone: no allocation failure or alert');
} block_from(name => 'small zone', http_config => $fast_idp,
    config => location(path => '/a', content => 'empty_gif;') . $fast_internal);

# 9. An entry in use survives a stream of new tokens that fills the zone
# many times over: between any two of its hits, one new token is stored.
run {
    my $sock;
    my $ask = sub {
        my ($token) = @_;
        $sock //= IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port(), Timeout => 10)
            or return 0;
        print $sock "GET /a HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer $token\r\n\r\n";
        my ($status, $close) = read_keepalive_response($sock);
        if ($close) { close $sock; undef $sock }
        return $status;
    };
    my ($ok, $before) = (0, fast_idp_calls());
    for my $i (1 .. 1500) {
        $ok++ if $ask->("new-$i") == 200 && $ask->('in-use') == 200;
    }
    is($ok, 1500, 'in use: every request succeeds');
    is(fast_idp_calls() - $before, 1501, 'in use: the IdP was asked once for the token in use, once for each new one');
    is((get('/a', 'new-1'))[1], 'MISS', 'in use: the zone did fill and evict (an early new token is gone)');
} block_from(name => 'in use', http_config => $fast_idp,
    config => location(path => '/a', content => 'empty_gif;') . $fast_internal);

# One response from a keep-alive connection: (status, closed).
my %pending;
sub read_keepalive_response {
    my ($sock) = @_;
    my $buf = \($pending{$sock} //= '');
    while ($$buf !~ /\r\n\r\n/) {
        sysread($sock, $$buf, 65536, length $$buf) or return (0, 1);
    }
    my ($head, $rest) = split /\r\n\r\n/, $$buf, 2;
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
    $len //= 0;
    while (length($rest) < $len) {
        sysread($sock, $rest, 65536, length $rest) or last;
    }
    $$buf = substr($rest, $len);
    my $closed = $head =~ /^Connection:\s*close/mi ? 1 : 0;
    delete $pending{$sock} if $closed;
    return ($status // 0, $closed);
}

done_testing();
