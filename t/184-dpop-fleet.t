# The fleet's DPoP replay store (RFC 9449 §11.1, issue 23): with the Redis
# tier (auth_oauth2_token_shared_cache), a proof one gateway accepted is
# recorded in Redis (SET NX PX under a keyed-hash name), so the same proof
# replayed at another gateway of the fleet is refused with the challenge of a
# local replay. Two nginx instances share a real redis-server. When Redis
# is down, mute (slow) or answers garbage, each gateway's own store decides:
# the proof passes once per gateway, a warning is logged and
# oauth2_token_dpop_proofs_total{result="valid_local_only"} counts it. A
# location without the Redis tier keeps a store per gateway. During a key
# rotation, gateways on either side still see each other's proofs. Proofs are
# made by the npm `dpop` package (t/oidc/dpop.mjs).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use OIDCProvider ();
use Test::More;
use File::Temp qw(tempdir);
use JSON::PP;
use MIME::Base64 qw(decode_base64url);

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();

my $dir = tempdir(CLEANUP => 1);
my $JSON = JSON::PP->new->canonical;
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';
my $HOST = 'api.test';
my $TOKEN = 'fleet-bound-token-Zq81';

# Proofs by the key in $keyfile (made on first use), one per spec.
sub proofs {
    my ($keyfile, @specs) = @_;
    my $in = "$dir/in.json";
    open my $fh, '>', $in or die $!;
    print $fh $JSON->encode({ keyfile => "$dir/$keyfile", proofs => \@specs });
    close $fh;
    my $out = `$NODE t/oidc/dpop.mjs < $in`;
    die "t/oidc/dpop.mjs failed: $?" if $?;
    return decode_json($out);
}

# One fresh proof of the bound key for GET $path.
sub proof { proofs('alice.jwk', { htm => 'GET', htu => "http://$HOST$_[0]", token => $TOKEN })->{proofs}[0] }

my $JKT = proofs('alice.jwk')->{jkt};
my $redis = redis_start() or BAIL_OUT('redis');
my $KEY = write_secret('fleet.key', ('k' x 40) . "\n");

my $http = <<CONF;
upstream redis {
    server 127.0.0.1:${\ $redis->port};
    keepalive 4;
}
auth_oauth2_token_redis redis key_file=$KEY;
CONF

my $config = <<'CONF';
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
auth_oauth2_token_client_secret s3cret;
add_header X-Error $oauth2_token_error always;
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=60s;
    auth_oauth2_token_shared_cache /_oauth2_redis;
    proxy_pass http://backend;
}
location /redirect/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_shared_cache /_oauth2_redis;
    try_files /nonexistent @app;
}
location @app {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_shared_cache /_oauth2_redis;
    proxy_pass http://backend;
}
location /local/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_oauth2_redis {
    internal;
    auth_oauth2_token_redis_pass;
    auth_oauth2_token_redis_read_timeout 300ms;
}
location = /metrics { auth_oauth2_token_metrics; }
CONF

idp_setup({ $TOKEN => { json => { active => \1, sub => 'alice', cnf => { jkt => $JKT } } } });
my %sections = (http_config => $http, config => $config, workers => 2);
start_nginx(block_from(name => 'gw1', %sections)) or BAIL_OUT('gateway 1');
my $gw2 = start_gateway(name => 'gw2', %sections) or BAIL_OUT('gateway 2');
my %PORT = (gw1 => server_port(), gw2 => $gw2->port);

sub send_to {
    my ($gw, $path, $proof) = @_;
    my @headers = ("Host: $HOST", "Authorization: DPoP $TOKEN");
    push @headers, "DPoP: $proof" if defined $proof;
    my $r = http_request({ method => 'GET', uri => $path, port => $PORT{$gw}, headers => \@headers });
    $r->{challenge} = join ' | ', map { $_->[1] } grep { lc $_->[0] eq 'www-authenticate' } @{ $r->{headers} };
    return $r;
}

sub metric {
    my ($gw, $result) = @_;
    my $m = http_request({ method => 'GET', uri => '/metrics', port => $PORT{$gw} })->{body} // '';
    return $m =~ /^oauth2_token_dpop_proofs_total\{result="$result"\} (\d+)$/m ? $1 : undef;
}

my $REPLAY = qr/DPoP realm="[^"]*", algs="[^"]*", error="invalid_dpop_proof", error_description="the DPoP proof was used before"/;

sub replayed_at {
    my ($gw, $path, $proof, $what) = @_;
    my $r = send_to($gw, $path, $proof);
    is($r->{status}, 401, "$what: refused at $gw");
    like($r->{challenge}, $REPLAY, "$what: invalid_dpop_proof, used before");
    is(header($r, 'X-Error'), 'invalid_dpop_proof', "$what: \$oauth2_token_error");
}

sub passes_at {
    my ($gw, $path, $proof, $what) = @_;
    my $r = send_to($gw, $path, $proof);
    is($r->{status}, 200, "$what: passes at $gw") or diag("$r->{status} $r->{challenge}");
}

sub proof_keys { grep { /^oauth2:d:/ } $redis->keys }

# 1. Accepted at gateway 1, replayed at gateway 2: refused there.
{
    my $p = proof('/api/a');
    passes_at('gw1', '/api/a', $p, 'a fresh proof');
    my @keys = proof_keys();
    is(scalar @keys, 1, 'the proof is recorded in Redis');
    like($keys[0] // '', qr/^oauth2:d:[0-9a-f]{64}$/, 'under a keyed-hash name');
    my $jti = decode_json(decode_base64url((split /\./, $p)[1]))->{jti};
    ok(!grep({ index($_, $jti) >= 0 || index($_, $TOKEN) >= 0 } $redis->keys), 'no jti or token in any name');
    is($redis->cmd('GET', $keys[0]), '1', 'the value is a plain 1');
    my $pttl = $redis->pttl($keys[0]);
    ok($pttl > 55_000 && $pttl <= 66_000, "it lives until the window ends, plus 5 s ($pttl ms)");
    replayed_at('gw2', '/api/a', $p, 'the proof replayed at the other gateway');
    replayed_at('gw1', '/api/a', $p, 'the proof replayed at the same gateway');
    is(metric('gw2', 'replayed_fleet'), 1, 'gateway 2 counts a fleet replay');
    is(metric('gw1', 'replayed'), 1, 'gateway 1 counts a local replay');
    is(metric('gw1', 'valid'), 1, 'gateway 1 counts one valid proof');
    like($gw2->error_log, qr/DPoP proof refused: its jti was used before at a gateway of the fleet/,
        'gateway 2 logs the fleet replay');

    # The other way round, and a cache hit (gateway 2's zone) checked again.
    my $q = proof('/api/b');
    passes_at('gw2', '/api/b', $q, 'a fresh proof at gateway 2');
    replayed_at('gw1', '/api/b', $q, 'replayed at gateway 1');
    passes_at('gw2', '/api/c', proof('/api/c'), 'another fresh proof (a cache hit)');
    is(metric('gw2', 'valid'), 2, 'gateway 2 counts two valid proofs');
}

# 2. An internal redirect checks the proof again: not its own replay, and
# Redis is not asked twice; the proof stays refused elsewhere.
{
    my $p = proof('/redirect/x');
    my $before = proof_keys();
    passes_at('gw1', '/redirect/x', $p, 'a proof through an internal redirect');
    is(proof_keys() - $before, 1, 'one name recorded for it');
    replayed_at('gw2', '/redirect/x', $p, 'the redirected proof replayed');
}

# 3. Without the Redis tier, each gateway keeps its own store.
{
    my $p = proof('/local/a');
    my $before = proof_keys();
    passes_at('gw1', '/local/a', $p, 'no Redis tier');
    passes_at('gw2', '/local/a', $p, 'no Redis tier: the other gateway has its own store');
    replayed_at('gw1', '/local/a', $p, 'no Redis tier: a replay at the same gateway');
    is(scalar(proof_keys()), $before, 'no Redis tier: nothing recorded in Redis');
}

# 4. Redis down, mute or answering garbage: this gateway's store decides.
sub falls_back {
    my ($what, $kind) = @_;
    my $valid = metric('gw1', 'valid');
    my $local = metric('gw1', 'valid_local_only');
    my $p = proof('/api/down');
    passes_at('gw1', '/api/down', $p, "$what: a fresh proof");
    is(metric('gw1', 'valid_local_only'), $local + 1, "$what: counted as valid_local_only");
    is(metric('gw1', 'valid'), $valid, "$what: not as valid");
    replayed_at('gw1', '/api/down', $p, "$what: the same gateway still refuses a replay");
    passes_at('gw2', '/api/down', $p, "$what: another gateway cannot be told (documented)");
    like(error_log_text(), qr/\[warn\].*the fleet's DPoP replay store \(Redis\) gave no answer \($kind\): proofs are checked against this gateway's replay store only/,
        "$what: the warning names the failure");
}
{
    $redis->stop;
    falls_back('Redis killed', 'connect');
    my $mute = mute_server(port => $redis->port);
    falls_back('Redis mute', 'timeout');
    $mute->stop;
    $mute = mute_server(port => $redis->port, greeting => ":1\r\n");
    falls_back('a reply that is not SET\'s', 'protocol');
    $mute->stop;

    # Back: the fleet is protected again.
    $redis->restart;
    my $p = proof('/api/back');
    my $r;
    # The gateways' kept connections to the old servers are gone; the
    # first call after may meet one closing.
    ok(wait_until(5, sub { $r = send_to('gw1', '/api/back', $p = proof('/api/back')); $r->{status} == 200 && proof_keys() }),
        'Redis back: a proof is recorded again');
    replayed_at('gw2', '/api/back', $p, 'Redis back: replayed at the other gateway');
}

# 5. A key rotation: gateway 1 writes under a new key and still holds the
# old one, gateway 2 has the old one only; each refuses the other's proofs.
{
    my $NEW = write_secret('new.key', ('n' x 40) . "\n");
    (my $rotated = $http) =~ s/key_file=\Q$KEY\E/key_file=$NEW old_key_file=$KEY/ or die 'no key_file';
    ok(reload_nginx(block_from(name => 'gw1', %sections, http_config => $rotated)), 'gateway 1 rotates to a new key');
    my $p = proof('/api/rot1');
    passes_at('gw1', '/api/rot1', $p, 'rotation: a fresh proof at the rotated gateway');
    replayed_at('gw2', '/api/rot1', $p, 'rotation: replayed at the gateway with the old key only');
    my $q = proof('/api/rot2');
    passes_at('gw2', '/api/rot2', $q, 'rotation: a fresh proof at the gateway with the old key only');
    replayed_at('gw1', '/api/rot2', $q, 'rotation: replayed at the rotated gateway');
}

my $log = join "\n", grep { /auth_oauth2_token/ } split /\n/, error_log_text() . $gw2->error_log;
unlike($log, qr/\Q$TOKEN\E/, 'no token in the error logs');

done_testing();
