# auth_oauth2_token_purge (issue #13): RFC 7009's request shape (POST
# token=..., 200 whether or not anything was cached, 405 with Allow: POST,
# 400 for a missing or malformed token); a purge on one gateway drops the
# token from its zone, from Redis and, through the purge channel, from every
# other gateway's zone within 2 s, and leaves other tokens cached. Without
# Redis it purges the local zone; with Redis down, the zone is purged and the
# answer is 503 (the fleet was not told).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use Time::HiRes qw(time sleep);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $SECRET = 'purge-fleet-secret-0123456789abcdef0123456789';
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $MAC = hmac_sha256('oauth2 fleet mac', $SECRET);
sub slot { 'oauth2:t:' . hmac_sha256_hex("token\0$_[0]", $MAC) }

my $ACTIVE = { json => { active => \1, sub => 'alice', exp => int(time) + 3600 } };
my $INACTIVE = { json => { active => \0 } };

sub gw {
    my ($name, $redis, %o) = @_;
    return block_from(name => $name,
        fleet_config(name => $name, redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY, %o));
}

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

# A purge request on a gateway's own port.
sub purge {
    my ($port, %req) = @_;
    my $r = http_request({ method => 'POST', uri => '/purge', port => $port,
        headers => ['Content-Type: application/x-www-form-urlencoded'], %req });
    return $r;
}

sub allow_header { return join ',', map { $_->[1] } grep { lc $_->[0] eq 'allow' } @{ $_[0]{headers} } }

# ---- 1. the fleet -------------------------------------------------------------------
my $redis = redis_start() or BAIL_OUT('redis');
idp_setup({ T => $ACTIVE, U => $ACTIVE });
start_nginx(gw('gw1', $redis)) or BAIL_OUT('gateway 1');
my $GW1 = server_port();
is(st(api($SHARED, '/api/a', $_)), '200 MISS', "fill: gateway 1 caches $_") for qw(T U);
ok(wait_until(3, sub { scalar($redis->keys) == 2 }), 'fill: both tokens are in Redis');
my $gw2 = start_gateway(%{ gw('gw2', $redis) }) or BAIL_OUT('gateway 2');
for my $t (qw(T U)) {
    is(st(on_gateway($SHARED, 'gw2', '/api/a', $t)), '200 HIT_SHARED', "fill: gateway 2 gets $t from Redis");
    is(st(on_gateway($SHARED, 'gw2', '/api/a', $t)), '200 HIT', "fill: gateway 2 has $t in its zone");
    is(st(on_gateway($SHARED, 'gw1', '/api/a', $t)), '200 HIT', "fill: gateway 1 has $t in its zone");
}
is(scalar @{ idp_requests() }, 2, 'fill: two IdP calls in all');
ok($redis->wait_numsub('oauth2:purge', 2), 'both gateways subscribed to oauth2:purge')
    or diag('subscribers: ' . $redis->numsub('oauth2:purge'));

# ---- 2. the request's shape ------------------------------------------------------------
{
    my $r = http_request({ method => 'GET', uri => '/purge', port => $GW1 });
    is($r->{status}, 405, 'shape: GET is 405');
    is(allow_header($r), 'POST', 'shape: with Allow: POST');
    for my $case (['no body', undef], ['empty body', ''], ['no token field', 'foo=bar'],
        ['an empty token', 'token='], ['two tokens', 'token=a&token=b'], ['a malformed encoding', 'token=%zz'])
    {
        my ($what, $body) = @$case;
        is(purge($GW1, defined $body ? (body => $body) : ())->{status}, 400, "shape: $what is 400");
    }
    is(purge($GW1, body => 'token=never-cached')->{status}, 200, 'shape: a token nothing was cached for is 200');
    is(purge($GW1, body => 'token=never-cached&token_type_hint=access_token')->{status}, 200,
        'shape: token_type_hint is ignored');
    is(scalar @{ idp_requests() }, 2, 'shape: no IdP call');
    is(st(on_gateway($SHARED, 'gw1', '/api/a', 'T')), '200 HIT', 'shape: T is still cached on gateway 1');
}

# ---- 3. revoke at the IdP, purge on gateway 1: every gateway asks the IdP again ---------
{
    idp_setup({ T => $INACTIVE, U => $ACTIVE });    # also clears the recorded calls
    my $r = purge($GW1, body => 'token=T');
    is($r->{status}, 200, 'purge: 200');
    is($redis->cmd('EXISTS', slot('T')), 0, "purge: Redis no longer has T's key");
    is($redis->cmd('EXISTS', slot('U')), 1, "purge: U's key stays");
    like(error_log_text(), qr/purge removed 1 cached answers/, 'purge: gateway 1 removed one entry from its zone');

    # Gateway 1 dropped T before answering; gateway 2 drops it when the
    # message arrives (at most 2 s). Every 401 is an IdP verdict (inactive
    # answers are not cached without negative_ttl).
    my (%first_401, @late, $n401);
    my $deadline = time + 2;
    while (time < $deadline && keys %first_401 < 2) {
        my $a = api($SHARED, '/api/a', 'T');
        if ($a->{status} == 401) {
            $n401++;
            $first_401{ $a->{gw} } //= time;
        } elsif ($a->{gw} eq 'gw1' || $first_401{ $a->{gw} }) {
            push @late, "$a->{gw} $a->{status} $a->{cache}";
        }
    }
    ok($first_401{gw1}, 'purge: gateway 1 denies T');
    ok($first_401{gw2}, 'purge: gateway 2 denies T within 2 s (its zone entry was dropped)');
    is_deeply(\@late, [], 'purge: no gateway served T from a zone after it had dropped it');
    is(calls_for('T'), $n401 // 0, 'purge: every denial was the IdP\'s answer');
    cmp_ok(calls_for('T'), '>=', 2, 'purge: both gateways asked the IdP');
    like($gw2->error_log, qr/revocation channel subscribed/, 'purge: gateway 2 logged its subscription');

    is(st(on_gateway($SHARED, 'gw1', '/api/a', 'U')), '200 HIT', 'purge: U stays cached on gateway 1');
    is(st(on_gateway($SHARED, 'gw2', '/api/a', 'U')), '200 HIT', 'purge: U stays cached on gateway 2');
    is(calls_for('U'), 0, 'purge: no IdP call for U');
}

# ---- 4. a purge on gateway 2 reaches gateway 1 -----------------------------------------
{
    idp_setup({ V => $ACTIVE });
    # Whichever gateway answers first asks the IdP, the other reads Redis.
    my $first = api($SHARED, '/api/a', 'V');
    is(st($first), '200 MISS', "reverse: $first->{gw} caches V");
    my $other = $first->{gw} eq 'gw1' ? 'gw2' : 'gw1';
    ok(wait_until(3, sub { $redis->cmd('EXISTS', slot('V')) }), 'reverse: V is in Redis');
    is(st(on_gateway($SHARED, $other, '/api/a', 'V')), '200 HIT_SHARED', "reverse: $other gets V from Redis");
    is(st(on_gateway($SHARED, 'gw1', '/api/a', 'V')), '200 HIT', 'reverse: gateway 1 has V in its zone');
    idp_setup({ V => $INACTIVE });    # revoke first, then purge
    is(purge($gw2->port, body => 'token=V')->{status}, 200, 'reverse: purge on gateway 2');
    my $ok = wait_until(2, sub { ((on_gateway($SHARED, 'gw1', '/api/a', 'V', 1) // {})->{status} // 0) == 401 });
    ok($ok, 'reverse: gateway 1 denies V within 2 s (the purge reached it)');
    cmp_ok(calls_for('V'), '>=', 1, 'reverse: after asking the IdP');
}

# ---- 4b. after a reload, gateway 2's new worker 0 subscribes and purges -------------------
{
    idp_setup({ R => $ACTIVE });
    # (a request that reached gateway 1 first put R into Redis: then HIT_SHARED)
    like(st(on_gateway($SHARED, 'gw2', '/api/a', 'R')), qr/^200 (?:MISS|HIT_SHARED)$/, 'reload: gateway 2 caches R');
    is(st(on_gateway($SHARED, 'gw2', '/api/a', 'R')), '200 HIT', 'reload: in its zone');
    ok($gw2->reload, 'reload: gateway 2 reloaded (its old workers are gone)');
    ok($redis->wait_numsub('oauth2:purge', 2), 'reload: two subscribers again, not three')
        or diag('subscribers: ' . $redis->numsub('oauth2:purge'));
    is(st(on_gateway($SHARED, 'gw2', '/api/a', 'R')), '200 HIT', 'reload: the zone kept R');
    idp_setup({ R => $INACTIVE });
    is(purge($GW1, body => 'token=R')->{status}, 200, 'reload: purge on gateway 1');
    my $ok = wait_until(2, sub { ((on_gateway($SHARED, 'gw2', '/api/a', 'R', 1) // {})->{status} // 0) == 401 });
    ok($ok, 'reload: the reloaded gateway 2 denies R within 2 s');
}

# ---- 4c. a purge drops the token's exchanged tokens too, on both gateways ----------------
{
    my $issued = { json => { access_token => 'narrow-token-for-orders',
        issued_token_type => 'urn:ietf:params:oauth:token-type:access_token', expires_in => 300 } };
    idp_setup({ '/token X' => $issued });
    for my $gw (qw(gw1 gw2)) {
        ok(on_gateway($SHARED, $gw, '/x/a', 'X'), "exchange: $gw exchanges X");
        is(st(on_gateway($SHARED, $gw, '/x/a', 'X')), '200 HIT', "exchange: $gw has it in its zone");
    }
    # Revoked at the token endpoint, then purged: a gateway that still had
    # the exchanged token in its zone would answer 200; one that asks again
    # gets invalid_grant (401), which is never cached.
    idp_setup({ '/token X' => { status => 400, json => { error => 'invalid_grant' } } });
    is(purge($GW1, body => 'token=X')->{status}, 200, 'exchange: purge X on gateway 1');
    is($redis->cmd('EXISTS', slot('X')), 0, "exchange: Redis no longer has X's key");
    my (%first_401, @late);
    my $deadline = time + 2;
    while (time < $deadline && keys %first_401 < 2) {
        my $a = api($SHARED, '/x/a', 'X');
        if ($a->{status} == 401) {
            $first_401{ $a->{gw} } //= 1;
        } elsif ($a->{gw} eq 'gw1' || $first_401{ $a->{gw} }) {
            push @late, "$a->{gw} $a->{status} $a->{cache}";
        }
    }
    ok($first_401{gw1} && $first_401{gw2}, 'exchange: both gateways ask the token endpoint again within 2 s')
        or diag(explain(\%first_401));
    is_deeply(\@late, [], 'exchange: no gateway served the exchanged token from its zone after dropping it');
}
$gw2->stop;    # from here on, every request reaches gateway 1

# ---- 5. Redis down: the zone is purged, the answer is 503 ---------------------------------
{
    idp_setup({ W => $ACTIVE });
    is(st(api($SHARED, '/api/a', 'W')), '200 MISS', 'redis down: gateway 1 caches W');
    is(st(api($SHARED, '/api/a', 'W')), '200 HIT', 'redis down: from its zone');
    $redis->stop;
    is(purge($GW1, body => 'token=W')->{status}, 503, 'redis down: the purge is 503 (the fleet was not told)');
    like(error_log_text(), qr/purge did not reach the shared cache/, 'redis down: logged');
    is(st(api($SHARED, '/api/a', 'W')), '200 MISS', 'redis down: the zone was purged all the same');
    is(calls_for('W'), 2, 'redis down: the IdP was asked again');
}
stop_nginx();

# ---- 6. without Redis: the local zone ---------------------------------------------------
{
    idp_setup({ T => $ACTIVE, U => $ACTIVE });
    start_nginx(block_from(name => 'no redis',
        http_config => 'auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=60s;',
        config => <<'CONF')) or BAIL_OUT('nginx');
add_header X-Cache-Status $oauth2_token_cache_status always;
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /purge {
    allow 127.0.0.1;
    deny all;
    auth_oauth2_token_purge;
}
CONF
    my $port = server_port();
    is(st(api($port, '/api/a', $_)), '200 MISS', "local: $_ cached") for qw(T U);
    is(st(api($port, '/api/a', $_)), '200 HIT', "local: $_ from the zone") for qw(T U);
    is(purge($port, body => 'token=T')->{status}, 200, 'local: purge T');
    is(st(api($port, '/api/a', 'T')), '200 MISS', 'local: T asks the IdP again');
    is(st(api($port, '/api/a', 'U')), '200 HIT', 'local: U stays');
    is(calls_for('T'), 2, 'local: two IdP calls for T');
    is(calls_for('U'), 1, 'local: one for U');
    is(http_request({ method => 'PUT', uri => '/purge', port => $port, body => 'token=T' })->{status}, 405,
        'local: PUT is 405');
    stop_nginx();
}

done_testing();
