# The revocation list is read without its lock while nothing ever changed it
# (src/shm/table.rs refuses_nothing). That shortcut must end with the first
# change, also one that never finished: gdb stops the worker inside the
# first change of a new list (in the slab allocator, for the revocation's
# cutoff) and kills it. The next request, before any retry of the push,
# must find the list half-changed, rebuild it and be refused by the floor
# the rebuilt list starts with, not pass as if the list were still empty.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use POSIX ();
use Time::HiRes qw(time sleep);

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;
my ($GDB) = grep { -x } map { "$_/gdb" } split /:/, $ENV{PATH};
plan skip_all => 'gdb is not installed (make deps installs it)' unless $GDB;

start_servers();
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';

sub signed { return SsfTest::signed("$dir/t.jwk", "$dir/t.jwks", @_) }
sub disabled {
    my ($who, $jti) = @_;
    return { claims => { iss => $ISS, aud => $AUD, iat => int(time), jti => $jti, events => {
        'https://schemas.openid.net/secevent/risc/event-type/account-disabled' =>
            { subject => { format => 'iss_sub', iss => $ISS, sub => $who } } } } };
}
signed();
my $NOW = int(time);
idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => $_, iss => $ISS, iat => $NOW - 20 } }) }
    qw(alice bob) });

start_nginx(block_from(name => 'untouched list', http_config =>
    "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD keys=$dir/t.jwks;",
    config => <<CONF)) or BAIL_OUT('nginx');
location = /ssf { auth_oauth2_token_ssf_push; }
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

sub get {
    my ($token) = @_;
    return http_request(raw_request('GET', '/api/', ["Authorization: Bearer $token"]))->{status};
}

is(get('tok-alice'), 200, 'alice passes while the list was never changed');
is(get('tok-bob'), 200, 'bob too');

my ($worker) = worker_pids();
my $out = prefix() . '/gdb.out';
my $gdb = fork // die "fork: $!";
if (!$gdb) {
    open STDOUT, '>', $out or die;
    open STDERR, '>&', \*STDOUT or die;
    exec($GDB, '-q', '-nx', '-batch', '-p', $worker, map { ('-ex', $_) }
        'break ngx_slab_alloc_locked', 'echo ATTACHED\n', 'continue', 'echo STOPPED\n', 'kill')
        or POSIX::_exit(127);
}
my $deadline = time + 30;
sleep 0.05 until (OAuth2Test::slurp($out) // '') =~ /ATTACHED/ || time > $deadline;
my ($set) = signed(disabled('alice', 'first-change'));
my $r = http_request(raw_request('POST', '/ssf', ['Content-Type: application/secevent+jwt'], $set), 30);
$deadline = time + 30;
sleep 0.05 while waitpid($gdb, POSIX::WNOHANG()) == 0 && time < $deadline;
like(OAuth2Test::slurp($out) // '', qr/STOPPED/, 'the worker was stopped inside the first change and killed');
isnt($r->{status} // 0, 202, 'the push got no 202');
$deadline = time + 10;
sleep 0.05 until (grep { $_ != $worker } worker_pids()) || time > $deadline;

# No retry of the push yet: only the request finds the half-changed list.
is(get('tok-bob'), 401, 'bob, issued before the rebuild, is refused by its floor at once');
like(error_log_text(), qr/zone "ssf" was left half-changed by a worker that died/,
    'the request rebuilt the list');
idp_setup({ 'tok-bob-new' => { json => { active => \1, sub => 'bob', iss => $ISS, iat => int(time) + 2 } } });
is(get('tok-bob-new'), 200, 'a token issued after the rebuild passes');

done_testing();
