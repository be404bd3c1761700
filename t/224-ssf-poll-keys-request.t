# Revocation polled from the IdP (RFC 8936) with the transmitter's keys
# fetched from its jwks_uri (keys_request= of auth_oauth2_token_ssf_receiver):
# worker 0 checks each polled SET with the set fetched through an internal
# location, as a subrequest of a request of the poll's own, kept in the poll
# location's keys zone. While no set can be had, a polled SET is neither
# acknowledged nor refused (logged once); once the jwks_uri answers, the set
# is fetched, the SET applied and acknowledged. More SETs signed by the same
# key fetch nothing more; a SET signed by a key never published is refused
# in setErrs (invalid_key).
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
my $NOW = time;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
my $SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';

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

sub revoked {
    my ($keyfile, $jwksfile, $who, $jti) = @_;
    my ($set) = SsfTest::signed("$dir/$keyfile", "$dir/$jwksfile", { claims => { iss => $ISS, aud => $AUD,
        iat => $NOW - 10, jti => $jti, sub_id => { format => 'iss_sub', iss => $ISS, sub => $who },
        events => { $SESSION_REVOKED => {} } } });
    return $set;
}
# Key A is the one served; C a key the transmitter never published.
SsfTest::signed("$dir/a.jwk", "$dir/served.jwks");
SsfTest::signed("$dir/c.jwk", "$dir/c.jwks");

my @children;
END { local $?; for (@children) { kill 'TERM', $_; waitpid($_, 0) } }
sub spawn {
    my ($port, @argv) = @_;
    OAuth2Test::release_port($port);
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$dir/children.log";
        open STDERR, '>&', \*STDOUT;
        exec $NODE, @argv or POSIX::_exit(127);
    }
    push @children, $pid;
    wait_until(10, sub { OAuth2Test::can_connect($port) }) or BAIL_OUT("@argv did not start");
}

# The poll transmitter (started now), and the jwks_uri (started later).
open my $fh, '>', "$dir/poll-bearer" or die $!;
print $fh "poll-keys-token-0123456789abcdef\n";
close $fh;
chmod 0600, "$dir/poll-bearer";
my $TPORT = OAuth2Test::reserve_port();
spawn($TPORT, 't/oidc/ssf-poll-transmitter.mjs', $TPORT, "$dir/poll-bearer", "$dir/transmitter-state.json");
my $JPORT = OAuth2Test::reserve_port();

sub queue { SsfTest::poll_queue($TPORT, @_) }
sub tstate { SsfTest::poll_state($TPORT) }
sub acks { tstate()->{acks}{ $_[0] } // 0 }
sub polls { scalar @{ tstate()->{polls} } }

my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD"
    . " keys_request=/_ssf_jwks max_age=2m token_lifetime=1h;";
my $config = <<CONF;
location = /_ssf_poll {
    internal;
    auth_oauth2_token_jwt_keys_cache zone=ssf_jwks:1m unknown_kid_interval=5s;
    auth_oauth2_token_ssf_poll interval=1s max_events=10 bearer_file=$dir/poll-bearer;
    proxy_pass http://127.0.0.1:$TPORT/poll;
}
location = /_ssf_jwks {
    internal;
    log_subrequest on;
    access_log logs/jwks.log;
    proxy_pass http://127.0.0.1:$JPORT/jwks;
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

idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20 } }) }
    qw(alice bob carol dave) });
start_nginx(block_from(name => 'ssf-poll-keys', config => $config, http_config => $http, workers => 2))
    or BAIL_OUT('nginx');

sub get { http_request(raw_request('GET', '/api/', ["Authorization: Bearer $_[0]"]))->{status} }
sub fetches {
    my $text = OAuth2Test::slurp(OAuth2Test::prefix() . '/logs/jwks.log') // '';
    return scalar(() = $text =~ /\n/g);
}

is(get("tok-$_"), 200, "before: ${_}'s token passes") for qw(alice bob carol dave);

# 1. The jwks_uri is down: the polled SET is neither acknowledged nor
# refused, and nothing is applied.
queue('keys-1' => revoked('a.jwk', 'served.jwks', 'alice', 'keys-1'));
ok(wait_until(10, sub { fetches() >= 1 }), 'jwks_uri down: the poll tried to fetch the set');
my $seen = polls();
ok(wait_until(10, sub { polls() >= $seen + 2 }), 'jwks_uri down: the gateway polls again');
is(acks('keys-1'), 0, 'jwks_uri down: the SET is not acknowledged');
ok(!exists tstate()->{errs}{'keys-1'}, 'jwks_uri down: ... nor refused');
is(get('tok-alice'), 200, 'jwks_uri down: nothing applied, alice passes');
my @down = error_log_text() =~ /SSF poll: \d+ SETs not checked: the transmitter's JWK Set cannot be had/g;
is(scalar @down, 1, 'jwks_uri down: logged once, though polled again');

# 2. Up: once the retry is due, the set is fetched and the SET applied.
spawn($JPORT, 't/oidc/ssf-transmitter.mjs', 'serve', $JPORT, "$dir/served.jwks", "$dir/jwks.ready");
ok(wait_until(30, sub { acks('keys-1') >= 1 }), 'jwks_uri up: the SET is checked with the fetched key and acknowledged');
is(get('tok-alice'), 401, 'alice is refused');
is(get('tok-bob'), 200, 'bob passes');
like(error_log_text(), qr/SSF poll: the transmitter's JWK Set is had again/, 'the recovery is logged');
my $fetched = fetches();

# 3. More SETs signed by key A: checked with the set kept, no fetch.
queue('keys-2' => revoked('a.jwk', 'served.jwks', 'carol', 'keys-2'));
ok(wait_until(10, sub { acks('keys-2') >= 1 }), 'a second SET signed by key A: acknowledged');
is(get('tok-carol'), 401, 'carol is refused');
is(fetches(), $fetched, 'the set was kept: no fetch for it');

# 4. A SET signed by a key never published: refused, invalid_key.
queue('keys-3' => revoked('c.jwk', 'c.jwks', 'dave', 'keys-3'));
ok(wait_until(10, sub { exists tstate()->{errs}{'keys-3'} }), 'a SET signed by an unknown key: reported in setErrs');
is(tstate()->{errs}{'keys-3'}{err}, 'invalid_key', '... invalid_key');
is(acks('keys-3'), 0, '... not acknowledged');
is(get('tok-dave'), 200, 'dave passes');
is(acks('keys-1'), 1, 'the first SET was acknowledged once');
unlike(error_log_text(), qr/\[(?:alert|crit|emerg)\]/, 'no alert logged');

done_testing();
