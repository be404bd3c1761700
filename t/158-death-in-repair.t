# A second worker death inside the repair of the zone (issue 22, item 11).
# A worker that dies in the middle of a change leaves the table marked; the
# next lock holder repairs it (empties the region and lays out a new table,
# `make` in src/shm/table.rs). If that worker dies too, inside the repair,
# the one after it must still find either no table or a marked one, never
# an unmarked table with pieces of the old one.
#
# Before the fix, `make` wrote the new table's header in the old table's
# place with the mark (`changing`) cleared first and the counters and the
# queue's head written after it: a worker killed right after the mark was
# cleared left an unmarked table whose counters were the old table's and
# whose queue pointed at nodes in memory the reset had freed. The next worker
# took it as it was. Now the mark is cleared last, behind a fence.
#
# gdb stops the workers where the test needs them, and kills them there:
#
#   1. the first death: the worker is stopped in the slab allocator, which
#      the table calls only while it is marked (inside an insert), and
#      killed; the second death: the next worker is stopped in the repair
#      right after the store that clears the mark of the new table (a
#      hardware watchpoint on that word of the table the repair allocated),
#      and killed. The third worker serves, the cache works, its counters
#      count only what it stored (before the fix: the old table's entries
#      too), the table stays sound for twenty more entries, nobody finds it
#      half-changed again, and no worker crashes.
#   2. the same, with the second worker killed right after the repair
#      emptied the region (ngx_slab_init returned): the third worker repairs
#      again, and the cache works.
#
# Every wait polls a condition with a deadline; gdb is bounded too.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my ($GDB) = grep { -x } map { "$_/gdb" } split /:/, $ENV{PATH};
plan skip_all => 'gdb is not installed (make deps installs it)' unless $GDB;

start_servers();
idp_setup({ '*' => { json => { active => \1, sub => 'alice' } } });

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_metrics; }
CONF

sub get {
    my ($token, $timeout) = @_;
    my $r = http_request(raw_request('GET', '/a', ["Authorization: Bearer $token"]), $timeout);
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    return ($r->{status} // 'no answer') . ' ' . ($cache // '-');
}

sub metric {
    my ($name) = @_;
    my $r = http_request(raw_request('GET', '/metrics', []));
    my ($v) = ($r->{body} // '') =~ /^\Q$name\E (\S+)$/m;
    return $v // 'none';
}

# The one worker, once it is not $old (nginx starts another when one dies).
sub next_worker {
    my ($old) = @_;
    my $deadline = time + 10;
    while (time < $deadline) {
        my @w = grep { !defined $old || $_ != $old } worker_pids();
        return $w[0] if @w == 1 && !(defined $old && kill 0, $old);
        sleep 0.02;
    }
    return undef;
}

# Runs gdb on $pid with @commands (each one -ex); returns the output file
# and gdb's pid once gdb has attached (it prints ATTACHED then).
sub gdb_attach {
    my ($pid, $name, @commands) = @_;
    my $out = prefix() . "/gdb-$name.out";
    unlink $out;
    my $gdb = fork // die "fork: $!";
    if (!$gdb) {
        open STDOUT, '>', $out or die;
        open STDERR, '>&', \*STDOUT or die;
        exec $GDB, '-q', '-nx', '-batch', '-p', $pid, map { ('-ex', $_) } @commands;
        exit 127;
    }
    my $deadline = time + 30;
    sleep 0.05 until (OAuth2Test::slurp($out) // '') =~ /ATTACHED/ || time > $deadline;
    return ($out, $gdb);
}

# Waits for gdb to end (30 s at most, then it is killed); its output.
sub gdb_done {
    my ($out, $gdb) = @_;
    my $deadline = time + 30;
    sleep 0.05 while waitpid($gdb, WNOHANG) == 0 && time < $deadline;
    if (kill 0, $gdb) { kill 'KILL', $gdb; waitpid $gdb, 0 }
    return OAuth2Test::slurp($out) // '';
}

# Workers that ended on a signal other than the KILL the test sent.
sub crashes { grep { /exited on signal/ && !/exited on signal 9\b/ } split /\n/, error_log_text() }

# Until the worker after $old answers $token with a 200 (the first
# requests may still reach the dead one's connection).
sub served_after {
    my ($old, $token) = @_;
    my $worker = next_worker($old) or return 'no new worker';
    my $deadline = time + 10;
    my $status = '';
    while (time < $deadline) {
        $status = get($token);
        last if $status =~ /^200/;
        sleep 0.05;
    }
    return $status;
}

# A worker killed inside an insert, then the next one killed inside the
# repair where @stop leaves it. Returns the third worker's pid.
sub two_deaths {
    my ($name, @stop) = @_;
    (my $tok = $name) =~ s/\W/-/g;
    # Entries that expire in a second or two: once they have, an insert
    # reclaims them from the queue's tail (a table whose queue still holds
    # them after the repair is walked into freed memory).
    my $exp = int(time) + 2;
    idp_setup({ '*' => { json => { active => \1, sub => 'alice' } },
        map { ("$tok-before-$_" => { json => { active => \1, sub => 'alice', exp => $exp } }) } 1 .. 3 });
    is(get("$tok-before-$_"), '200 MISS', "$name: entry $_ stored") for 1 .. 3;
    is(get("$tok-before-1"), '200 HIT', "$name: and found");
    sleep 0.05 while time < $exp + 0.05;

    # The first death: inside an insert, the table marked.
    my $first = next_worker();
    my ($out, $gdb) = gdb_attach($first, "$name-1", 'break ngx_slab_alloc_locked', 'echo ATTACHED\n',
        'continue', 'echo STOPPED\n', 'kill');
    like(OAuth2Test::slurp($out) // '', qr/ATTACHED/, "$name: gdb attached to the first worker");
    get("$tok-dies-in-insert", 30);
    like(gdb_done($out, $gdb), qr/STOPPED/, "$name: the first worker was stopped in the allocator and killed");

    # The second death: inside the repair that the next lock holder starts.
    my $second = next_worker($first);
    ok($second, "$name: nginx started a second worker") or return;
    ($out, $gdb) = gdb_attach($second, "$name-2", 'break ngx_slab_init', 'echo ATTACHED\n', 'continue',
        'echo REPAIRING\n', @stop, 'echo STOPPED\n', 'kill');
    like(OAuth2Test::slurp($out) // '', qr/ATTACHED/, "$name: gdb attached to the second worker");
    get("$tok-dies-in-repair", 30);
    my $text = gdb_done($out, $gdb);
    like($text, qr/REPAIRING/, "$name: the second worker started the repair (it emptied the region)")
        or diag($text);
    like($text, qr/STOPPED/, "$name: and was stopped inside it and killed") or diag($text);
    return ($second, $text);
}

# ---- 1. killed right after the new table's mark was cleared ---------------------------------------
{
    start_nginx(block_from(name => 'mark cleared', http_config => 'auth_oauth2_token_introspect_cache zone=tokens:1m;',
        config => $config)) or BAIL_OUT('nginx');
    # After the region is emptied, the table is the first allocation; stop
    # when its `changing` word (bytes 8..12) becomes 0.
    my ($second, $gdb) = two_deaths('mark cleared', 'finish', 'delete', 'break ngx_slab_alloc_locked', 'continue', 'finish',
        'set language c', 'set $t = (char *) $rax', 'delete', 'watch -l *(int *)($t + 8)', 'condition $bpnum *(int *)($t + 8) == 0',
        'continue');
    like($gdb // '', qr/Old value = 1\s+New value = 0/, 'mark cleared: the second worker was stopped as it cleared the mark');
    my $mark = length error_log_text();
    is(served_after($second, 'after'), '200 MISS', 'mark cleared: the third worker serves');
    # Fails before: the counters were the old table's (3 entries more).
    is(metric('oauth2_token_cache_entries{zone="tokens"}'), 1, 'mark cleared: the zone counts the one entry stored since');
    # Fails before: the insert reclaimed the expired entries from the old
    # queue, did not find them in their (emptied) chains, and left the table
    # marked; the next lock holder cleared it, entry and all.
    is(get('after'), '200 HIT', 'mark cleared: the entry stored since is found');
    is(get("more-$_"), '200 MISS', "mark cleared: entry more-$_ stored") for 1 .. 20;
    is(scalar(grep { get("more-$_") eq '200 HIT' } 1 .. 20), 20, 'mark cleared: and all twenty found');
    is(metric('oauth2_token_cache_entries{zone="tokens"}'), 21, 'mark cleared: the zone counts 21 entries');
    is(get('mark-cleared-before-1'), '200 MISS', 'mark cleared: entries from before are gone');
    my @repairs = grep { /was left half-changed/ } split /\n/, substr(error_log_text(), $mark);
    is(scalar @repairs, 0, 'mark cleared: nobody found the table half-changed since') or diag(join "\n", @repairs);
    is_deeply([crashes()], [], 'mark cleared: no worker crashed (only the two killed)');
    stop_nginx();
}

# ---- 2. killed right after the repair emptied the region --------------------------------------------
{
    start_nginx(block_from(name => 'region emptied', http_config => 'auth_oauth2_token_introspect_cache zone=tokens:1m;',
        config => $config)) or BAIL_OUT('nginx');
    my ($second) = two_deaths('region emptied', 'finish');
    is(served_after($second, 'after'), '200 MISS', 'region emptied: the third worker serves');
    like(error_log_text(), qr/zone "tokens" was left half-changed by a worker that died; its entries were dropped/,
        'region emptied: the third worker repaired the zone, and said so');
    # The table the third worker made refuses answers obtained at or before
    # its making (the cutoffs of the old one are lost), to the millisecond:
    # the answer of the request that made it may be one. The next one is
    # asked once nginx's clock has moved past that millisecond.
    my $until = time + 0.005;
    sleep 0.001 while time < $until;
    is(get('after-2'), '200 MISS', 'region emptied: an entry asked after the repair');
    is(get('after-2'), '200 HIT', 'region emptied: is stored and found');
    like(get('after'), qr/^200 (?:HIT|MISS)$/, 'region emptied: the first token again (stored, or asked again)');
    is(get('after'), '200 HIT', 'region emptied: and then found');
    is(metric('oauth2_token_cache_entries{zone="tokens"}'), 2, 'region emptied: the zone counts the two entries stored since');
    is(get('region-emptied-before-1'), '200 MISS', 'region emptied: entries from before are gone');
    is_deeply([crashes()], [], 'region emptied: no worker crashed (only the two killed)');
    stop_nginx();
}

done_testing();
