# The exchange cache: keys that keep audiences apart, lifetimes that are
# independent of the introspection cache's but never outlive the subject token,
# and concurrent requests for one new token that share one exchange.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use Time::HiRes qw(sleep time);

start_servers();

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    return $r->{status};
}

sub calls_to {
    my ($path) = @_;
    return scalar grep { $_->{path} eq $path } @{ idp_requests() };
}

my $internal = <<'CONF';
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_pass http://idp/token; }
CONF

my $new = { json => { access_token => 'n', issued_token_type => 'urn:ietf:params:oauth:token-type:access_token',
    expires_in => 300 } };

# 1. Every value that shapes the exchanged token is part of the key.
idp_setup({ t => $new });
start_nginx(block_from(name => 'audiences', http_config => 'auth_oauth2_token_exchange_cache zone=x:1m;',
    config => <<'CONF' . $internal)) or BAIL_OUT('nginx');
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_audience $arg_aud;
    proxy_pass http://backend;
}
CONF
is(get('/?aud=a1', 't'), 200, 'audiences: a1 exchanged');
is(get('/?aud=a2', 't'), 200, 'audiences: a2 exchanged');
is(calls_to('/token'), 2, 'audiences: a2 did not reuse the token exchanged for a1');
is(get('/?aud=a1', 't'), 200, 'audiences: a1 again');
is(get('/?aud=a2', 't'), 200, 'audiences: a2 again');
is(calls_to('/token'), 2, 'audiences: both served from the cache');
my @audiences = map { /audience=(\w+)/ ? $1 : () } map { $_->{body} } @{ idp_requests() };
is_deeply(\@audiences, [qw(a1 a2)], 'audiences: the token endpoint saw each audience once');
stop_nginx();

# 2. The two caches expire independently.
my $both = <<'CONF' . $internal;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
CONF
idp_setup({ '/introspect t' => { json => { active => \1 } }, '/token t' => $new });
start_nginx(block_from(name => 'independent', config => $both, http_config => <<'CONF')) or BAIL_OUT('nginx');
auth_oauth2_token_introspect_cache zone=i:1m max_ttl=1s;
auth_oauth2_token_exchange_cache zone=x:1m max_ttl=300s;
CONF
is(get('/', 't'), 200, 'independent: first request');
is(get('/', 't'), 200, 'independent: second request');
is_deeply([calls_to('/introspect'), calls_to('/token')], [1, 1], 'independent: both cached');
sleep 1.3;
is(get('/', 't'), 200, 'independent: after the introspection TTL');
is_deeply([calls_to('/introspect'), calls_to('/token')], [2, 1],
    'independent: introspection asked again, the exchanged token still cached');
stop_nginx();

# 3. An exchanged token is not cached past the subject token's exp.
idp_setup({ '/introspect t' => { json => { active => \1, exp => int(time) + 2 } }, '/token t' => $new });
start_nginx(block_from(name => 'subject exp', config => $both, http_config => <<'CONF')) or BAIL_OUT('nginx');
auth_oauth2_token_exchange_cache zone=x:1m max_ttl=300s;
CONF
is(get('/', 't'), 200, 'subject exp: first request');
is(get('/', 't'), 200, 'subject exp: second request');
is(calls_to('/token'), 1, 'subject exp: exchanged once');
sleep 2.3;
idp_setup({ '/introspect t' => { json => { active => \1, exp => int(time) + 60 } }, '/token t' => $new });
is(get('/', 't'), 200, 'subject exp: after the subject token expired (and was renewed)');
is(calls_to('/token'), 1, 'subject exp: the exchange was done again, not served past exp');
stop_nginx();

# 4. Concurrent requests for one new token share one exchange (per worker, hence
# one worker). The token endpoint answers after $DELAY s, so all 20 requests,
# written at once on non-blocking sockets by http_requests, are in nginx while
# the first exchange is in flight; X-Time ($request_time when the response
# starts) proves that none of them came late enough to be a plain cache hit.
my $DELAY = 0.5;
my $exchange_only = <<'CONF' . $internal;
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_audience orders-api;
    add_header X-Time $request_time always;
    proxy_pass http://backend;
}
CONF

sub burst {
    my ($n, $token) = @_;
    return http_requests([ (raw_request('GET', '/', ["Authorization: Bearer $token"])) x $n ]);
}

sub statuses {
    my %seen;
    $seen{ $_->{status} }++ for @_;
    return join ', ', map { "$seen{$_} x $_" } sort keys %seen;
}

sub slowest_wait_ok {
    my ($name, @r) = @_;
    my @late = grep { !defined $_ || $_ < $DELAY / 2 } map { header_value($_, 'X-Time') } @r;
    ok(!@late, "$name: every request waited for the exchange in flight (X-Time >= " . $DELAY / 2 . ')')
        or diag('X-Time values: ' . join(' ', map { header_value($_, 'X-Time') // 'none' } @r));
}

sub header_value {
    my ($r, $name) = @_;
    my ($v) = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $r->{headers} };
    return $v;
}

idp_setup({ '/token c' => { delay => $DELAY, json => { access_token => 'c-new',
    issued_token_type => 'urn:ietf:params:oauth:token-type:access_token', expires_in => 300 } } });
start_nginx(block_from(name => 'coalesce', workers => 1, config => $exchange_only,
    http_config => 'auth_oauth2_token_exchange_cache zone=x:1m;')) or BAIL_OUT('nginx');
{
    my @r = burst(20, 'c');
    is(statuses(@r), '20 x 200', 'coalesce: all 20 concurrent requests get 200')
        or diag('first error: ' . (((grep { $_->{error} } @r)[0] // {})->{error} // 'none'));
    slowest_wait_ok('coalesce', @r);
    is(calls_to('/token'), 1, 'coalesce: 20 concurrent requests for one new token made 1 token endpoint call');
    is(scalar @{ idp_requests() }, calls_to('/token'), 'coalesce: and nothing else reached the IdP');
    my @backend = @{ backend_requests() };
    is(scalar @backend, 20, 'coalesce: the backend got all 20 requests');
    my @auth = map { header_value($_, 'Authorization') . ' x ' . grep { lc $_->[0] eq 'authorization' } @{ $_->{headers} } }
        @backend;
    is_deeply(\@auth, [('Bearer c-new x 1') x 20], 'coalesce: each with the exchanged token, and only it');
}
stop_nginx();

# 5. A failed exchange is shared too: one call, the same 502 for everyone (the
# token endpoint answers 500), and, failures never being cached, the next
# request asks again.
idp_setup({ '/token f' => { delay => $DELAY, status => 500, json => { error => 'server_error' } } });
start_nginx(block_from(name => 'coalesce failure', workers => 1, config => $exchange_only,
    http_config => 'auth_oauth2_token_exchange_cache zone=x:1m;')) or BAIL_OUT('nginx');
{
    my @r = burst(20, 'f');
    is(statuses(@r), '20 x 502', 'coalesce failure: all 20 concurrent requests get 502');
    slowest_wait_ok('coalesce failure', @r);
    is(calls_to('/token'), 1, 'coalesce failure: 20 concurrent requests made 1 token endpoint call');
    is(scalar @{ backend_requests() }, 0, 'coalesce failure: nothing reached the backend');
    my $before = calls_to('/token');
    is(get('/', 'f'), 502, 'coalesce failure: a later request is refused too');
    is(calls_to('/token') - $before, 1,
        'coalesce failure: and asked the token endpoint again (failures are not cached)');
}
stop_nginx();

done_testing();
