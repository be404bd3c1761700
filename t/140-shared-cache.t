# The shared cache tier (issue #13): gateways of one fleet share answers
# through Redis. What one gateway learnt from the IdP another serves with no
# IdP call ($oauth2_token_cache_status HIT_SHARED), then from its own zone
# (HIT); with a Redis password, an ACL user, another database. Redis holds no
# token, claim or JWT, only names under the prefix and sealed values; a value
# tampered with is a miss (the IdP is asked) and one log line; an entry lives
# no longer than the token; inactive answers only with negative_ttl; a
# gateway reads what the fleet wrote under its old key, and one with an
# unrelated key reads nothing.
#
# Most blocks run both gateways on one 127.0.0.1 port with reuseport, as the
# clients of a fleet see it; X-Gateway tells which one answered (see
# RedisTest.pm, "A fleet"). Block 5 gives each gateway a listen of its own:
# the shared tier names a server by its server_name only.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use MIME::Base64 qw(encode_base64url);
use Time::HiRes qw(time);

start_servers();
my $SHARED = OAuth2Test::reserve_port();
my $SECRET = 'fleet-secret-0123456789abcdef-0123456789abcdef';    # 46 bytes
my $KEY = write_secret('fleet.key', "$SECRET\n");
my $OLD = write_secret('old.key', ('o' x 40) . "\n");
my $NEW = write_secret('new.key', ('n' x 40) . "\n");
my $OTHER = write_secret('other.key', ('x' x 40) . "\n");

my $FAR = int(time) + 3600;
sub active { my ($sub, $exp) = @_; return { json => { active => \1, sub => $sub, exp => $exp // $FAR, scope => 'read' } } }

my $JWT = join '.', encode_base64url('{"alg":"RS256","typ":"at+jwt"}'),
    encode_base64url('{"sub":"alice-in-jwt","aud":"orders-api"}'), encode_base64url('sig');
my $ISSUED = { json => { access_token => $JWT,
    issued_token_type => 'urn:ietf:params:oauth:token-type:access_token', expires_in => 300 } };

sub gw {
    my ($name, $redis, %o) = @_;
    return block_from(name => $name,
        fleet_config(name => $name, redis_port => $redis->port, shared_port => $SHARED, key_file => $KEY, %o));
}

# Gateway 1 is the harness's nginx; gateway 2 its own nginx (RedisTest).
sub start_gw1 { my $b = gw('gw1', @_); start_nginx($b) or BAIL_OUT("gateway 1 does not start: $b->{http_config}") }
sub start_gw2 { my $gw = start_gateway(%{ gw('gw2', @_) }) or BAIL_OUT('gateway 2 does not start'); return $gw }

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }

sub backend_header {
    my ($name) = @_;
    my ($last) = reverse @{ backend_requests() };
    return (map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $last->{headers} // [] })[0] // '';
}

# Every key, field and value in Redis, for the "nothing in clear" checks.
sub redis_dump {
    my ($redis) = @_;
    my %dump;
    for my $key ($redis->keys) {
        my $type = $redis->cmd('TYPE', $key);
        $dump{$key} = $type eq 'hash' ? $redis->hgetall($key) : { '(type)' => $type };
    }
    return \%dump;
}

sub wait_for_keys {
    my ($redis, $n, $what) = @_;
    my $ok = wait_until(3, sub { scalar($redis->keys) >= $n });
    ok($ok, "$what: Redis has $n key(s) (the background write)") or diag(explain(redis_dump($redis)));
    return $ok;
}

# The fleet in one setting: gateway 1 introspects (1 IdP call), gateway 2
# serves from Redis (HIT_SHARED, no call), then from its zone (HIT).
sub shares {
    my ($label, $redis, %o) = @_;
    my $tok = "tok-$label-Q7vXw2";
    my $sub = "sub-$label-83kd";
    idp_setup({ $tok => active($sub) });
    start_gw1($redis, %o);
    is(st(api($SHARED, '/api/a', $tok)), '200 MISS', "$label: gateway 1 asks the IdP");
    is(calls_for($tok), 1, "$label: one IdP call");
    wait_for_keys($redis, 1, $label) or return;
    my $gw2 = start_gw2($redis, %o);
    my $r = on_gateway($SHARED, 'gw2', '/api/a', $tok);
    is(st($r), '200 HIT_SHARED', "$label: gateway 2 serves it from Redis");
    is(calls_for($tok), 1, "$label: with no IdP call");
    is(backend_header('X-Sub'), $sub, "$label: with the claims gateway 1 learnt");
    is(st(on_gateway($SHARED, 'gw2', '/api/b', $tok)), '200 HIT', "$label: then from its own zone");
    is(calls_for($tok), 1, "$label: still one IdP call");
    unlike($gw2->error_log, qr/shared cache \(Redis\)/, "$label: gateway 2 logged no Redis failure")
        or diag($gw2->error_log);
    unlike(error_log_text(), qr/shared cache \(Redis\)/, "$label: gateway 1 logged no Redis failure");
    return $gw2;
}

# ---- 1. no password; exchange; what Redis holds ----------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $tok = 'tok-plain-Q7vXw2';
    my $xtok = 'xtok-plain-Hh51';
    idp_setup({ $tok => active('sub-plain-83kd'), "/token $xtok" => $ISSUED });
    start_gw1($redis);
    is(st(api($SHARED, '/api/a', $tok)), '200 MISS', 'plain: gateway 1 introspects');
    is(st(api($SHARED, '/x/a', $xtok)), '200 MISS', 'plain: gateway 1 exchanges');
    is(calls_for($tok), 1, 'plain: one introspection call');
    is(calls_for($xtok, '/token'), 1, 'plain: one exchange call');
    wait_for_keys($redis, 2, 'plain');
    my $gw2 = start_gw2($redis);
    my $r = on_gateway($SHARED, 'gw2', '/api/a', $tok);
    is(st($r), '200 HIT_SHARED', 'plain: gateway 2 serves the introspection answer from Redis');
    is(backend_header('X-Sub'), 'sub-plain-83kd', 'plain: the claims came along');
    $r = on_gateway($SHARED, 'gw2', '/x/a', $xtok);
    is(st($r), '200 HIT_SHARED', 'plain: gateway 2 serves the exchanged token from Redis');
    is(backend_header('Authorization'), "Bearer $JWT", 'plain: the exchanged token went upstream');
    is(st(on_gateway($SHARED, 'gw2', '/api/a', $tok)), '200 HIT', 'plain: then introspection from its zone');
    is(st(on_gateway($SHARED, 'gw2', '/x/a', $xtok)), '200 HIT', 'plain: and the exchange from its zone');
    is(calls_for($tok), 1, 'plain: still one introspection call');
    is(calls_for($xtok, '/token'), 1, 'plain: still one exchange call');
    is(scalar @{ idp_requests() }, 2, 'plain: two IdP calls in all');

    # What Redis holds.
    my $dump = redis_dump($redis);
    my @keys = sort keys %$dump;
    is(scalar @keys, 2, 'redis: one key per token') or diag(explain($dump));
    ok(!grep({ !/^oauth2:t:[0-9a-f]{64}\z/ } @keys), 'redis: every key is oauth2:t:<64 hex>')
        or diag(explain(\@keys));
    my $mac = hmac_sha256('oauth2 fleet mac', $SECRET);
    my %want = map { ('oauth2:t:' . hmac_sha256_hex("token\0$_", $mac)) => 1 } $tok, $xtok;
    is_deeply([sort keys %want], \@keys, 'redis: the key names are the documented HMAC of the token');
    my @all;
    for my $k (@keys) {
        my $h = $dump->{$k};
        ok(!grep({ !/^[0-9a-f]{64}\z/ } keys %$h), "redis: $k: the fields are 64 hex") or diag(explain($h));
        for my $v (values %$h) {
            is(substr($v, 0, 1), "\x02", 'redis: a sealed value begins with version 2 (entries carry when the IdP answered)');
            cmp_ok(length $v, '>=', 1 + 12 + 16 + 16, 'redis: nonce, lifetimes and tag are there');
        }
        push @all, $k, %$h;
    }
    my $blob = join "\0", @all;
    for my $secret ($tok, $xtok, 'sub-plain-83kd', 'alice-in-jwt', 'eyJ', $JWT, 'orders-api', 'active') {
        ok(index($blob, $secret) < 0, "redis: '$secret' appears in no key, field or value");
    }
    ok(index(lc $blob, lc unpack('H*', $tok)) < 0, 'redis: not even the token in hex');

    # A value tampered with: a miss (the IdP is asked again), logged once.
    my @t = ('tamper-1-a9', 'tamper-2-b8');
    idp_setup({ map { $_ => active("sub-$_") } @t });
    $gw2->stop;
    is(st(api($SHARED, '/api/a', $_)), '200 MISS', "tamper: gateway 1 caches $_") for @t;
    wait_for_keys($redis, 4, 'tamper');
    my ($k1, $k2) = map { 'oauth2:t:' . hmac_sha256_hex("token\0$_", $mac) } @t;
    my ($f1, $v1) = %{ $redis->hgetall($k1) };
    my ($f2, $v2) = %{ $redis->hgetall($k2) };
    ok(defined $v1 && defined $v2, 'tamper: both tokens are in Redis') or BAIL_OUT('no values to tamper with');
    $redis->hset($k1, $f1, "\x02" . ('A' x (length($v1) - 1)));    # other bytes
    substr($v2, -1, 1) ^= "\x01";                                    # one bit of the tag
    $redis->hset($k2, $f2, $v2);
    $gw2 = start_gw2($redis);
    is(st(on_gateway($SHARED, 'gw2', '/api/a', $t[0])), '200 MISS', 'tamper: a replaced value is a miss');
    is(calls_for($t[0]), 2, 'tamper: the IdP was asked again');
    is(st(on_gateway($SHARED, 'gw2', '/api/a', $t[1])), '200 MISS', 'tamper: a flipped bit is a miss');
    is(calls_for($t[1]), 2, 'tamper: the IdP was asked again');
    wait_until(1, sub { $gw2->error_log =~ /undecryptable value/ });
    my $lines = () = $gw2->error_log =~ /shared cache \(Redis\) undecryptable value/g;
    is($lines, 1, 'tamper: one log line for two undecryptable values (at most one per 10 s)')
        or diag($gw2->error_log);
    # (nginx's own debug lines print request headers; the module's lines
    # at notice and above must not name the token)
    my $module_lines = join "\n", grep { /auth_oauth2_token/ && !/\[debug\]/ } split /\n/, $gw2->error_log;
    for my $t (@t) {
        ok(index($module_lines, $t) < 0, "tamper: the module's log lines do not name the token $t");
    }
    $gw2->stop;
    stop_nginx();
    $redis->stop;
}

# ---- 2. lifetimes: PTTL within the token's exp and max_ttl; negative_ttl -------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $exp = int(time) + 20;
    idp_setup({ soon => active('s', $exp), far => active('f'), dead => { json => { active => \0 } } });
    start_gw1($redis);
    # The inactive one first: once the later answers are in Redis, its
    # write (if any) would have been too.
    is(st(api($SHARED, '/api/a', 'dead')), '401 MISS', 'ttl: an inactive token');
    is(st(api($SHARED, '/api/a', 'soon')), '200 MISS', 'ttl: a token with exp in 20 s');
    is(st(api($SHARED, '/api/a', 'far')), '200 MISS', 'ttl: a token with exp in an hour (max_ttl=60s)');
    wait_for_keys($redis, 2, 'ttl');
    my $mac = hmac_sha256('oauth2 fleet mac', $SECRET);
    my %key = map { $_ => 'oauth2:t:' . hmac_sha256_hex("token\0$_", $mac) } qw(soon far dead);
    # nginx computes the TTL from its cached clock, which may lag a few ms.
    my $left_ms = int(($exp - time) * 1000) + 50;
    my $pttl = $redis->pttl($key{soon});
    ok($pttl > 0 && $pttl <= $left_ms, "ttl: PTTL $pttl ms is > 0 and <= the token's remaining time (+50 ms: ${left_ms} ms)");
    $pttl = $redis->pttl($key{far});
    ok($pttl > 0 && $pttl <= 60_000, "ttl: PTTL $pttl ms is > 0 and <= max_ttl (60 s)");
    is($redis->cmd('EXISTS', $key{dead}), 0, 'ttl: without negative_ttl the inactive answer is not stored');
    stop_nginx();
    $redis->flushall;

    idp_setup({ dead => { json => { active => \0 } } });
    start_gw1($redis, cache => 'max_ttl=60s negative_ttl=30s');
    is(st(api($SHARED, '/api/a', 'dead')), '401 MISS', 'negative: gateway 1 asks');
    ok(wait_until(3, sub { $redis->cmd('EXISTS', $key{dead}) }), 'negative: with negative_ttl it is stored');
    $pttl = $redis->pttl($key{dead});
    ok($pttl > 0 && $pttl <= 30_000, "negative: PTTL $pttl ms <= negative_ttl (30 s)");
    my $gw2 = start_gw2($redis, cache => 'max_ttl=60s negative_ttl=30s');
    is(st(on_gateway($SHARED, 'gw2', '/api/a', 'dead')), '401 HIT_SHARED', 'negative: gateway 2 denies from Redis');
    is(calls_for('dead'), 1, 'negative: with no IdP call');
    $gw2->stop;
    stop_nginx();
    $redis->stop;
}

# ---- 3. Redis with a password, an ACL user, another database and prefix --------------
{
    my $redis = redis_start(password => 'redis-pw-91') or BAIL_OUT('redis');
    my $pw = write_secret('redis.pw', "redis-pw-91\n");
    my $gw2 = shares('requirepass', $redis, redis => "password_file=$pw");
    ok(scalar($redis->keys) >= 1, 'requirepass: the entry is in Redis (AUTH worked)');
    $gw2->stop if $gw2;
    stop_nginx();
    $redis->stop;
}
{
    # The user may run only the commands nginx-conf/fleet.conf documents for
    # its ACL user, on keys and the channel under the prefix.
    my ($rules) = OAuth2Test::slurp('nginx-conf/fleet.conf') =~ /ACL SETUSER gateway on >PASSWORD (.*?)\n\s*#\s+(.*?)\n/s
        ? ("$1 $2") : ('');
    ok($rules =~ /resetkeys/, "acl: fleet.conf documents the ACL user's rules ($rules)");
    my $redis = redis_start(user => ['gateway', 'gw-pass-55', $rules]) or BAIL_OUT('redis');
    my $pw = write_secret('redis-user.pw', "gw-pass-55\n");
    my $gw2 = shares('acl', $redis, redis => "user=gateway password_file=$pw");
    ok(scalar($redis->keys) >= 1, 'acl: the entry is in Redis (AUTH gateway ... worked)');
    ok($redis->wait_numsub('oauth2:purge', 2), 'acl: both gateways subscribed to the purge channel');
    my $denied = $redis->cmd('ACL', 'LOG');
    is(ref $denied eq 'ARRAY' ? scalar @$denied : -1, 0, 'acl: Redis refused no command (ACL LOG is empty)')
        or diag(explain($denied));
    $gw2->stop if $gw2;
    stop_nginx();
    $redis->stop;
}
{
    my $redis = redis_start(db => 3) or BAIL_OUT('redis');
    my $gw2 = shares('database', $redis, redis => 'database=3 prefix=fleetA:');
    my @keys = $redis->keys;
    ok(@keys >= 1 && !grep({ !/^fleetA:t:[0-9a-f]{64}\z/ } @keys), 'database: the keys are in database 3, under fleetA:')
        or diag(explain(\@keys));
    $redis->cmd('SELECT', 0);
    is(scalar($redis->keys), 0, 'database: database 0 stays empty');
    $redis->cmd('SELECT', 3);
    ok($redis->wait_numsub('fleetA:purge', 2), 'database: the purge channel is fleetA:purge');
    $gw2->stop if $gw2;
    stop_nginx();
    $redis->stop;
}

# ---- 4. key rotation -------------------------------------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    idp_setup({ rot => active('r'), fresh => active('f') });
    start_gw1($redis, key_file => $OLD);
    is(st(api($SHARED, '/api/a', 'rot')), '200 MISS', 'rotation: gateway 1 (old key) caches');
    wait_for_keys($redis, 1, 'rotation');
    my $gw2 = start_gw2($redis, key_file => $NEW, redis => "old_key_file=$OLD");
    is(st(on_gateway($SHARED, 'gw2', '/api/a', 'rot')), '200 HIT_SHARED',
        'rotation: gateway 2 (new key, old_key_file) reads what the old key wrote');
    is(calls_for('rot'), 1, 'rotation: with no IdP call');
    # A purge during the rotation removes what the old key wrote as well.
    my $old_slot = 'oauth2:t:' . hmac_sha256_hex("token\0rot", hmac_sha256('oauth2 fleet mac', 'o' x 40));
    is($redis->cmd('EXISTS', $old_slot), 1, 'rotation: the entry is under the old key');
    my $p = http_request({ method => 'POST', uri => '/purge', port => $gw2->port, body => 'token=rot' });
    is($p->{status}, 200, 'rotation: purge on gateway 2');
    is($redis->cmd('EXISTS', $old_slot), 0, 'rotation: the old key\'s entry is gone');
    stop_nginx();    # from here on gateway 2 gets every request
    is(st(api($SHARED, '/api/a', 'fresh')), '200 MISS', 'rotation: gateway 2 caches a new token');
    my $new_mac = hmac_sha256('oauth2 fleet mac', 'n' x 40);
    my $new_slot = 'oauth2:t:' . hmac_sha256_hex("token\0fresh", $new_mac);
    ok(wait_until(3, sub { $redis->cmd('EXISTS', $new_slot) }), 'rotation: written under the new key');
    unlike($gw2->error_log, qr/undecryptable/, 'rotation: no undecryptable value on gateway 2');
    $gw2->stop;

    my $gw3 = start_gateway(%{ gw('gw3', $redis, key_file => $OTHER) }) or BAIL_OUT('gateway 3');
    is(st(on_gateway($SHARED, 'gw3', '/api/a', 'rot')), '200 MISS', 'unrelated key: gateway 3 reads nothing');
    is(calls_for('rot'), 2, 'unrelated key: it asked the IdP');
    $gw3->stop;
    $redis->stop;
}

# ---- 5. gateways listen on addresses of their own ----------------------------------
# The shared tier names a server by its server_name: gateway 2 on another
# port (another host would have another address) shares gateway 1's answers;
# a server with another name does not.
{
    my $redis = redis_start() or BAIL_OUT('redis');
    idp_setup({ apart => active('a') });
    start_gw1($redis);
    is(st(api($SHARED, '/api/a', 'apart')), '200 MISS', 'own listen: gateway 1 caches');
    wait_for_keys($redis, 1, 'own listen');
    my $port2 = OAuth2Test::reserve_port();
    OAuth2Test::release_port($port2);
    my $gw2 = start_gateway(%{ gw('gw2', $redis, listen => "127.0.0.1:$port2") })
        or BAIL_OUT('gateway 2');
    is(st(api($port2, '/api/a', 'apart')), '200 HIT_SHARED', 'own listen: gateway 2 on its own port reads it');
    is(calls_for('apart'), 1, 'own listen: with no IdP call');
    $gw2->stop;
    my $port3 = OAuth2Test::reserve_port();
    OAuth2Test::release_port($port3);
    my $gw3 = start_gateway(%{ gw('gw3', $redis, listen => "127.0.0.1:$port3", server_name => 'other.test') })
        or BAIL_OUT('gateway 3');
    is(st(api($port3, '/api/a', 'apart')), '200 MISS', 'another server_name: not shared');
    is(calls_for('apart'), 2, 'another server_name: the IdP was asked');
    $gw3->stop;
    stop_nginx();
    $redis->stop;
}

done_testing();
