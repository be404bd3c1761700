# The shared-memory table under hard conditions: a worker killed while it
# changes the table (the next lock holder clears it and goes on), an entry
# that can never fit (not stored, nothing evicted for it), and a reload that
# lowers max_ttl (entries stored before it are bounded by the new value).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use MIME::Base64 qw(encode_base64url);
use Time::HiRes qw(sleep time);

start_servers();

sub location {
    my ($path, $extra) = @_;
    $extra //= '';
    return <<CONF;
location $path {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    add_header X-Cache \$oauth2_token_cache_status always;
    $extra
    proxy_pass http://backend;
}
CONF
}
my $INTERNAL = <<'CONF';
location = /_introspect { internal; proxy_pass http://idp/introspect; subrequest_output_buffer_size 128k; }
CONF

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    return "$r->{status} " . ($cache // '-');
}

sub calls { scalar @{ idp_requests() } }

# 1. A worker killed in the middle of an insert, with the zone's lock held
# and the table marked as changing: nginx force-unlocks the lock, and the next
# worker to take it clears the table instead of following its pointers.
SKIP: {
    my ($gdb) = grep { -x } map { "$_/gdb" } split /:/, $ENV{PATH};
    skip 'gdb is not installed (make deps installs it)', 8 unless $gdb;
    idp_setup({ '*' => { json => { active => \1, sub => 'alice' } } });
    start_nginx(block_from(name => 'killed worker',
        http_config => 'auth_oauth2_token_introspect_cache zone=tokens:1m;',
        config => location('/a') . $INTERNAL)) or BAIL_OUT('nginx');
    is(get('/a', 'before'), '200 MISS', 'killed worker: an entry is stored');
    is(get('/a', 'before'), '200 HIT', 'killed worker: and found');

    my ($worker) = worker_pids();
    my $out = prefix() . '/gdb.out';
    # Stop the worker in the slab allocator, which the table calls only
    # while it is marked as changing, and kill it there.
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $out or die;
        open STDERR, '>&', \*STDOUT or die;
        exec $gdb, '-q', '-nx', '-batch', '-p', $worker,
            '-ex', 'break ngx_slab_alloc_locked', '-ex', 'echo ATTACHED\n', '-ex', 'continue',
            '-ex', 'echo STOPPED\n', '-ex', 'kill';
        exit 127;
    }
    my $deadline = time + 30;
    sleep 0.05 until (-s $out && `cat $out` =~ /ATTACHED/) || time > $deadline;
    like(`cat $out`, qr/ATTACHED/, 'killed worker: gdb attached to the worker');
    my $r = http_request(raw_request('GET', '/a', ['Authorization: Bearer dies-here']), 30);
    waitpid $pid, 0;
    like(`cat $out`, qr/STOPPED/, 'killed worker: the worker was stopped in the allocator and killed')
        or diag(`cat $out`);

    # The master starts a new worker; the next insert finds the mark.
    $deadline = time + 10;
    my $status = '';
    while (time < $deadline) {
        $status = get('/a', 'after');
        last if $status =~ /^200/;
        sleep 0.05;
    }
    is($status, '200 MISS', 'killed worker: the next request is served');
    like(error_log_text(), qr/zone "tokens" was left half-changed by a worker that died; its entries were dropped/,
        'killed worker: the cleared table is logged');
    is(get('/a', 'before'), '200 MISS', 'killed worker: entries from before were dropped');
    is(get('/a', 'before'), '200 HIT', 'killed worker: and the table works again');
    stop_nginx();
}

# 2. An entry that can never fit a 32k zone is not stored, and evicts nothing.
{
    my $b64 = sub { encode_base64url($_[0]) };
    my $jwt = join '.', $b64->('{"alg":"ES256"}'),
        $b64->('{"sub":"big","exp":4102444800,"pad":"' . ('x' x 40_000) . '"}'), $b64->('signature');
    idp_setup({ big => { body => $jwt, content_type => 'application/jwt' },
        '*' => { json => { active => \1, sub => 'small' } } });
    start_nginx(block_from(name => 'never fits',
        http_config => 'auth_oauth2_token_introspect_cache zone=tiny:32k;',
        config => location('/a') . location('/p/', 'auth_oauth2_token_phantom on;') . $INTERNAL)) or BAIL_OUT('nginx');
    is(get('/a', "s$_"), '200 MISS', "never fits: small entry $_ stored") for 1 .. 3;
    is(get('/p/x', 'big'), '200 MISS', 'never fits: the big phantom answer is served');
    is(get('/p/x', 'big'), '200 MISS', 'never fits: but not cached');
    is(get('/a', "s$_"), '200 HIT', "never fits: small entry $_ was not evicted for it") for 1 .. 3;
    stop_nginx();
}

# 3. A reload that lowers max_ttl bounds the entries stored before it.
{
    idp_setup({ '*' => { json => { active => \1, sub => 'alice' } } });
    my $block = sub {
        my ($ttl) = @_;
        return block_from(name => 'lower max_ttl',
            http_config => "auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=$ttl;",
            config => location('/a') . $INTERNAL);
    };
    start_nginx($block->('300s')) or BAIL_OUT('nginx');
    my $stored = time;
    is(get('/a', 't'), '200 MISS', 'lower max_ttl: stored for up to 300 s');
    ok(reload_nginx($block->('1s')), 'lower max_ttl: reloaded with max_ttl=1s');
    sleep 0.05 while time < $stored + 1.2;
    is(get('/a', 't'), '200 EXPIRED', 'lower max_ttl: the entry is older than the new max_ttl');
    is(calls(), 2, 'lower max_ttl: the IdP was asked again');
    stop_nginx();
}

done_testing();
