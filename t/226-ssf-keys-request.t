# The Shared Signals receiver's keys fetched from the transmitter's
# jwks_uri (keys_request= of auth_oauth2_token_ssf_receiver), through the
# JWT issuers' machinery: the transmitter (t/oidc/ssf-transmitter.mjs)
# serves its JWK Set over HTTP; the push page fetches it through an
# internal location as a subrequest, once per gateway (two workers), keeps
# it in the keys zone, answers 503 while no set can be had, fetches it
# again for a SET signed by a new key (a rotation) at most once per
# unknown_kid_interval, and refuses a SET signed by the retired key.
# nginx -t: keys_request= needs auth_oauth2_token_jwt_keys_cache in the
# push location, and takes no keys= with it.
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
use Time::HiRes qw(time sleep);
use IO::Socket::INET;

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';

# Signs each spec with the key in $keyfile (made on first use), writing its
# public JWK Set to $jwksfile.
sub signed {
    my ($keyfile, $jwksfile, @specs) = @_;
    return SsfTest::signed("$dir/$keyfile", "$dir/$jwksfile", @specs);
}

my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
my $SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
my $jti = 0;
sub set_for {
    my ($sub) = @_;
    return { claims => { iss => $ISS, aud => $AUD, iat => int(time) - 1, jti => 'set-' . ++$jti,
        events => { $SESSION_REVOKED => {} }, sub_id => { format => 'iss_sub', iss => $ISS, sub => $sub } } };
}

# The transmitter's jwks_uri, served from $dir/served.jwks (rewritten at the
# rotation), on a port reserved now and opened later.
my $jwks_port = OAuth2Test::reserve_port();
my $jwks_pid;
sub start_jwks_server {
    OAuth2Test::release_port($jwks_port);
    my $ready = "$dir/jwks.ready";
    $jwks_pid = fork();
    die "fork: $!" unless defined $jwks_pid;
    if (!$jwks_pid) {
        open STDIN, '<', '/dev/null';
        exec $NODE, 't/oidc/ssf-transmitter.mjs', 'serve', $jwks_port, "$dir/served.jwks", $ready
            or POSIX::_exit(127);
    }
    my $deadline = time + 10;
    sleep 0.05 until -e $ready || time > $deadline;
    ok(-e $ready, 'the transmitter serves its JWK Set');
}
END { local $?; if ($jwks_pid) { kill 'TERM', $jwks_pid; waitpid($jwks_pid, 0) } }

# The first key, A, is the one served; C is a key the transmitter never
# published.
signed('a.jwk', 'served.jwks');
signed('c.jwk', 'c.jwks');

my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
    . " keys_request=/_ssf_jwks max_age=2m token_lifetime=1h;";
my $config = <<CONF;
location = /ssf {
    auth_oauth2_token_jwt_keys_cache zone=ssf_jwks:1m unknown_kid_interval=5s;
    auth_oauth2_token_ssf_push;
    add_header X-Worker \$pid always;
}
location = /_ssf_jwks {
    internal;
    log_subrequest on;
    access_log logs/jwks.log;
    proxy_pass http://127.0.0.1:$jwks_port/jwks;
}
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

idp_setup({
    'tok-alice' => { json => { active => \1, sub => 'alice', iss => $ISS, iat => $NOW - 20 } },
    'tok-bob'   => { json => { active => \1, sub => 'bob', iss => $ISS, iat => $NOW - 20 } },
    'tok-carol' => { json => { active => \1, sub => 'carol', iss => $ISS, iat => $NOW - 20 } },
    'tok-dave'  => { json => { active => \1, sub => 'dave', iss => $ISS, iat => $NOW - 20 } },
});
start_nginx(block_from(name => 'ssf-keys', config => $config, http_config => $http, workers => 2))
    or BAIL_OUT('nginx');

sub get {
    my ($token) = @_;
    return http_request(raw_request('GET', '/api/', ["Authorization: Bearer $token"]))->{status};
}
sub push_set {
    my ($set) = @_;
    my $r = http_request(raw_request('POST', '/ssf', ['Content-Type: application/secevent+jwt'], $set));
    my $json = eval { decode_json($r->{body}) };
    return ($r->{status}, $json);
}
sub fetches {
    my $text = OAuth2Test::slurp(OAuth2Test::prefix() . '/logs/jwks.log') // '';
    return scalar(() = $text =~ /\n/g);
}
# A connection kept alive, so that one worker answers all it sends; its
# pushes return the status, the error object and the worker's pid.
sub kept_connection {
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => OAuth2Test::server_port(),
        Proto => 'tcp', Timeout => 10) // die "connect: $!";
}
sub push_on {
    my ($sock, $set) = @_;
    print {$sock} "POST /ssf HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/secevent+jwt\r\n"
        . 'Content-Length: ' . length($set) . "\r\n\r\n$set";
    local $/ = "\r\n\r\n";
    my $head = <$sock> // return (0);
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    my ($length) = $head =~ /^Content-Length: (\d+)/mi;
    my ($pid) = $head =~ /^X-Worker: (\d+)/mi;
    my $body = '';
    read($sock, $body, $length // 0);
    return ($status, scalar(eval { decode_json($body) }), $pid);
}
# Pushes $set until it is accepted or $seconds pass (on $sock when given,
# else on new connections); the statuses seen.
sub push_until_accepted {
    my ($set, $seconds, $sock) = @_;
    my ($deadline, %seen) = (time + $seconds);
    while (time < $deadline) {
        my ($s) = $sock ? push_on($sock, $set) : push_set($set);
        $seen{$s}++;
        return \%seen if $s == 202;
        sleep 0.2;
    }
    return \%seen;
}

# 1. The jwks_uri is down: no set to be had, 503 (the transmitter retries);
#    nothing applied.
my ($alice_set) = signed('a.jwk', 'served.jwks', set_for('alice'));
is((push_set($alice_set))[0], 503, 'no JWK Set can be had: 503');
is(fetches(), 1, 'one fetch was tried');
is(get('tok-alice'), 200, 'nothing was applied: alice passes');

# 2. Up: after the retry interval, the set is fetched and the SET applies.
start_jwks_server();
my $seen = push_until_accepted($alice_set, 15);
ok($seen->{202}, 'once the jwks_uri answers, the SET signed by key A is accepted');
is(join(',', sort keys %$seen), '202,503', 'until then 503, never 400');
is(get('tok-alice'), 401, 'alice is refused');
is(fetches(), 2, 'the set was fetched once more');

# 3. More SETs, on new connections to both workers: the gateway's set is
#    used, no fetch.
for my $who (qw(bob bob bob bob bob bob)) {
    my ($set) = signed('a.jwk', 'served.jwks', set_for($who));
    my ($s) = push_set($set);
    is($s, 202, "a SET about $who signed by key A: accepted");
}
is(fetches(), 2, 'the set in the keys zone served both workers: no fetch');
is(get('tok-bob'), 401, 'bob is refused');

# 4. A SET signed by a key the transmitter never published: refused
#    (invalid_key), and within the interval it fetches nothing.
my ($c_set) = signed('c.jwk', 'c.jwks', set_for('dave'));
my ($s, $j) = push_set($c_set);
is($s, 400, 'a SET signed by an unpublished key: 400');
is($j && $j->{err}, 'invalid_key', '... invalid_key');
is(fetches(), 2, 'an unknown kid within unknown_kid_interval fetches nothing');
is(get('tok-dave'), 200, 'dave passes');

# Two connections kept alive, one to each worker; each worker holds the
# set with key A (a SET it accepted).
my ($to_x, $to_y, $x, $y);
for (1 .. 50) {
    my $sock = kept_connection();
    my ($s, undef, $pid) = push_on($sock, (signed('a.jwk', 'served.jwks', set_for('erin')))[0]);
    is($s, 202, 'a SET signed by key A on a kept connection') if !$to_x || !$to_y;
    if (!$to_x) { ($to_x, $x) = ($sock, $pid) } elsif (!$to_y && $pid != $x) { ($to_y, $y) = ($sock, $pid) }
    last if $to_y;
}
ok($to_x && $to_y, "a kept connection to each worker ($x, " . ($y // 'none') . ')') or BAIL_OUT('two workers');

# 5. Rotation: the transmitter publishes key B only and signs with it. The
#    first SET may come within the interval (400); then one fetch takes the
#    new set, and the SET applies. Only worker X sees key B.
my ($b_set) = signed('b.jwk', 'served.jwks', set_for('carol'));
$seen = push_until_accepted($b_set, 15, $to_x);
ok($seen->{202}, 'after the rotation, a SET signed by key B is accepted');
is(fetches(), 3, 'the rotation cost one fetch');
is(get('tok-carol'), 401, 'carol is refused');

# 6. Key A is retired: its SETs are refused, without a fetch (the set was
#    just fetched), by both workers: worker Y, which never saw key B, sees
#    that the keys zone changed and drops the set it held.
for ([$to_x, 'X'], [$to_y, 'Y']) {
    my ($sock, $name) = @$_;
    my ($old_set) = signed('a.jwk', 'a-only.jwks', set_for('dave'));
    ($s, $j) = push_on($sock, $old_set);
    is($s, 400, "a SET signed by the retired key A, at worker $name: 400");
    is($j && $j->{err}, 'invalid_key', '... invalid_key');
}
is(fetches(), 3, 'no fetch for it');
is(get('tok-dave'), 200, 'dave still passes');

# 7. A reload keeps the set (the keys zone outlives it): no fetch.
ok(reload_nginx(), 'reload');
my ($b_set2) = signed('b.jwk', 'served.jwks', set_for('dave'));
is((push_set($b_set2))[0], 202, 'after a reload, a SET signed by key B is accepted');
is(fetches(), 3, 'the set outlived the reload: no fetch');
is(get('tok-dave'), 401, 'dave is refused');
like(error_log_text(), qr/JWK Set fetched from "\/_ssf_jwks": 1 keys/, 'the fetch is logged');

stop_nginx();

# 8. Configuration mistakes fail nginx -t, naming the directive.
for my $case (
    ['keys_request without a keys zone', $http, 'location = /ssf { auth_oauth2_token_ssf_push; }',
        'needs "auth_oauth2_token_jwt_keys_cache"'],
    ['keys= and keys_request=', "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys=$dir/c.jwks keys_request=/_ssf_jwks;", 'location = /ssf { auth_oauth2_token_ssf_push; }',
        'one of "keys=" and "keys_request="'],
    ['keys_request= not a location', "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
        . " keys_request=http://idp/jwks;", '', 'internal location'],
) {
    my ($name, $http_config, $loc, $words) = @$case;
    my $out = OAuth2Test::run_must_die(block_from(name => $name, config => $loc, http_config => $http_config));
    like($out, qr/\Q$words\E/, "nginx -t: $name");
}

done_testing();
