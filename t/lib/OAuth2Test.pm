package OAuth2Test;

# End-to-end test harness for ngx_http_auth_oauth2_token_module: runs the real
# nginx with the real module against t/idp/test_idp.py (a scriptable IdP and
# an echo backend that record what they receive). Perl core modules only.
#
# A .t file is `use OAuth2Test; run_tests(%options); __DATA__` followed by
# blocks:
#
#   === TEST n: name
#   --- section: one-line value
#   --- section
#   multi-line value
#
# Configuration sections
#   main_config     text for the main (top) level of nginx.conf
#   http_config     text for http{}, after the harness's upstreams
#                   (run_tests(default_http_config => TEXT) gives a default)
#   config          text for the test server{} (run_tests(default_config => TEXT)
#                   gives the default for blocks without one)
#   workers: N      worker_processes (default 1)
#   user_files      files written into the prefix before nginx starts:
#                   ">>> name" starts a file; its lines follow, each ending in "\n"
#   must_die        run `nginx -t` only and expect it to fail; error_log lines
#                   must then appear in its output
#   skip_reason: T  skip the block
# Placeholders in every section: $TEST_NGINX_SERVER_PORT, $TEST_NGINX_IDP_PORT,
# $TEST_NGINX_BACKEND_PORT, $TEST_NGINX_CLOSED_PORT (nothing listens there),
# $TEST_NGINX_PREFIX. The http{} block always has `upstream idp` and
# `upstream backend` (keepalive 8), proxy_http_version 1.1 and an empty
# Connection header for upstreams.
#
# Requests
#   idp             JSON object TOKEN => behaviour for the test IdP (see
#                   t/idp/test_idp.py); the IdP's records are reset per block
#   request         "METHOD URI", optionally a blank line and a body
#   more_headers    request headers, sent as written (duplicates allowed)
#   repeat: N       send the request N times, one after the other
#   concurrent: N   send N copies at once
#   timeout: S      client timeout per request (default 10)
#
# Expectations (checked for every response)
#   error_code: N
#   response_headers        "Name: value" (every header of that name equals it),
#                           "!Name" (absent)
#   response_headers_like   "Name: regex"
#   response_body / response_body_like
# Expectations (checked once per block)
#   idp_calls: N / backend_calls: N   requests the IdP / backend received
#   idp_request     checks on the IdP's last request: "method: M", "path: P",
#                   "header Name: value", "!header Name", "body: exact",
#                   "body_like: regex"
#   backend_headers on the backend's last request: "Name: value", "!Name",
#                   "Name*: N" (appears N times)
#   backend_uri: U  the backend's last request URI
#   error_log       substrings (or /regex/) that must appear in this block's log
#   no_error_log    substrings (or /regex/) that must not
#   error_log_count "substring: N" lines: exact number of log lines containing it
#
# Helpers for custom Perl tests (all exported): start_servers() (the test IdP
# and backend; run_tests calls it), start_nginx(\%block),
# stop_nginx(), reload_nginx(), http_request($raw [, $timeout]) returning
# {status, headers => [[name, value]...], body}, raw_request(METHOD, URI,
# [headers]), idp_setup(\%behaviours), idp_requests(), backend_requests(),
# error_log_text(), server_port(), idp_port(), nginx_pid(), worker_pids(),
# prefix(), block_from(%sections).
#
# Environment: TEST_NGINX_BINARY, TEST_NGINX_MODULE (defaults: objs/), and
# TEST_NGINX_KEEP=1 to keep the per-file prefix with its logs.

use strict;
use warnings;
use Exporter 'import';
use Test::More;
use IO::Socket::INET;
use IO::Select;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use JSON::PP;

our @EXPORT = qw(run_tests start_servers start_nginx stop_nginx reload_nginx http_request raw_request
  idp_setup idp_requests backend_requests error_log_text server_port idp_port
  nginx_pid worker_pids prefix block_from);

my $ROOT = abs_path(dirname(__FILE__) . '/../..');
my $NGINX = $ENV{TEST_NGINX_BINARY} || "$ROOT/objs/nginx";
my $MODULE = $ENV{TEST_NGINX_MODULE} || "$ROOT/objs/ngx_http_auth_oauth2_token_module.so";
$MODULE = abs_path($MODULE) if -e $MODULE;

my %KNOWN = map { $_ => 1 } qw(main_config http_config config workers user_files must_die
  skip_reason idp request more_headers repeat concurrent timeout error_code response_headers
  response_headers_like response_body response_body_like idp_calls backend_calls idp_request
  backend_headers backend_uri error_log no_error_log error_log_count);

# TEST_NGINX_KEEP=1 keeps the prefix (nginx.conf, logs, the IdP's log) for a look afterwards.
my $PREFIX = tempdir('oauth2-test-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_KEEP});
chmod 0755, $PREFIX;    # workers run as nobody and write request-body temp files below it
my ($SERVER_PORT, $IDP_PORT, $BACKEND_PORT, $CLOSED_PORT);
my $IDP_PID;
my $NGINX_RUNNING = 0;
my $LOG_OFFSET = 0;
my $JSON = JSON::PP->new->canonical;
my $OWNER = $$;

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
        or die "cannot find a free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub server_port { $SERVER_PORT }
sub idp_port    { $IDP_PORT }
sub prefix      { $PREFIX }

sub start_servers {
    BAIL_OUT("no nginx at $NGINX: run `make` first") unless -x $NGINX;
    BAIL_OUT("no module at $MODULE: run `make` first") unless -f $MODULE;
    my %seen;
    for my $p (\$SERVER_PORT, \$IDP_PORT, \$BACKEND_PORT, \$CLOSED_PORT) {
        my $port;
        do { $port = free_port() } while $seen{$port}++;
        $$p = $port;
    }
    make_path("$PREFIX/logs");
    my $ready = "$PREFIX/idp.ready";
    $IDP_PID = fork();
    die "fork: $!" unless defined $IDP_PID;
    if (!$IDP_PID) {
        open STDOUT, '>', "$PREFIX/logs/idp.log";
        open STDERR, '>&', \*STDOUT;
        exec 'python3', "$ROOT/t/idp/test_idp.py", '--idp-port', $IDP_PORT,
            '--backend-port', $BACKEND_PORT, '--ready-file', $ready;
        die "exec python3: $!";
    }
    for (1 .. 200) { last if -e $ready; sleep 0.05 }
    BAIL_OUT("test IdP did not start: " . slurp("$PREFIX/logs/idp.log")) unless -e $ready;
}

END {
    if (defined $OWNER && $$ == $OWNER) {
        my $rc = $?;
        stop_nginx() if $NGINX_RUNNING;
        if ($IDP_PID) { kill 'KILL', $IDP_PID; waitpid($IDP_PID, 0) }
        $? = $rc;
    }
}
$SIG{INT} = $SIG{TERM} = sub { exit 1 };

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    my $text = <$fh>;
    return $text // '';
}

sub substitute {
    my ($text) = @_;
    return undef unless defined $text;
    $text =~ s/\$TEST_NGINX_SERVER_PORT\b/$SERVER_PORT/g;
    $text =~ s/\$TEST_NGINX_IDP_PORT\b/$IDP_PORT/g;
    $text =~ s/\$TEST_NGINX_BACKEND_PORT\b/$BACKEND_PORT/g;
    $text =~ s/\$TEST_NGINX_CLOSED_PORT\b/$CLOSED_PORT/g;
    $text =~ s/\$TEST_NGINX_PREFIX\b/$PREFIX/g;
    return $text;
}

# ---- blocks ------------------------------------------------------------

sub parse_blocks {
    my ($text) = @_;
    my @blocks;
    for my $chunk (split /^=== /m, $text) {
        next unless $chunk =~ /\S/;
        my ($title, $rest) = split /\n/, $chunk, 2;
        my %b = (name => $title);
        $rest //= '';
        my @parts = split /^--- /m, $rest;
        shift @parts;
        for my $part (@parts) {
            my ($head, $body) = split /\n/, $part, 2;
            $body //= '';
            my ($name, $value);
            if ($head =~ /^(\w+):\s*(.*?)\s*$/) {
                ($name, $value) = ($1, $2);
            } else {
                ($name = $head) =~ s/\s+$//;
                ($value = $body) =~ s/\n+\z//;
            }
            die "block '$title': unknown section '$name'\n" unless $KNOWN{$name};
            $b{$name} = $value;
        }
        push @blocks, \%b;
    }
    return @blocks;
}

sub block_from { my %b = @_; $b{name} //= 'custom'; return \%b }

sub lines_of {
    my ($text) = @_;
    return () unless defined $text;
    return grep { /\S/ } split /\n/, substitute($text);
}

sub nginx_conf {
    my ($b) = @_;
    my $workers = $b->{workers} // 1;
    my $main = substitute($b->{main_config} // '');
    my $http = substitute($b->{http_config} // '');
    my $config = substitute($b->{config} // '');
    return <<CONF;
daemon on;
master_process on;
worker_processes $workers;
error_log logs/error.log debug;
pid logs/nginx.pid;
load_module $MODULE;
$main
events {
    worker_connections 2048;
}
http {
    access_log logs/access.log;
    client_body_temp_path $PREFIX/client_body_temp;
    proxy_temp_path $PREFIX/proxy_temp;
    fastcgi_temp_path $PREFIX/fastcgi_temp;
    uwsgi_temp_path $PREFIX/uwsgi_temp;
    scgi_temp_path $PREFIX/scgi_temp;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    upstream idp {
        server 127.0.0.1:$IDP_PORT;
        keepalive 8;
    }
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 8;
    }
$http
    server {
        listen 127.0.0.1:$SERVER_PORT;
        server_name localhost;
$config
    }
}
CONF
}

sub write_files {
    my ($b) = @_;
    open my $fh, '>', "$PREFIX/nginx.conf" or die "nginx.conf: $!";
    print $fh nginx_conf($b);
    close $fh;
    return unless defined $b->{user_files};
    my ($out, $name);
    for my $line (split /\n/, substitute($b->{user_files})) {
        if ($line =~ /^>>> (\S+)\s*$/) {
            close $out if $out;
            $name = "$PREFIX/$1";
            make_path(dirname($name));
            open $out, '>', $name or die "$name: $!";
            next;
        }
        die "user_files: text before the first '>>> name'\n" unless $out;
        print $out "$line\n";
    }
    close $out if $out;
}

# ---- nginx -------------------------------------------------------------

sub nginx_pid {
    my $pid = slurp("$PREFIX/logs/nginx.pid");
    $pid =~ s/\s+//g;
    return $pid;
}

sub worker_pids {
    my $master = nginx_pid() or return ();
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my $s = slurp($stat) or next;
        my ($pid, $ppid) = $s =~ /^(\d+) \(.*?\) \S+ (\d+)/s or next;
        push @pids, $pid if $ppid == $master;
    }
    return sort { $a <=> $b } @pids;
}

# The daemonised master is not our child: once it exits it may stay a zombie
# until init reaps it, which counts as gone.
sub alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    return slurp("/proc/$pid/status") !~ /^State:\s+Z/m;
}

sub wait_for_port {
    my ($port) = @_;
    for (1 .. 200) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1);
        if ($s) { close $s; return 1 }
        sleep 0.025;
    }
    return 0;
}

sub start_nginx {
    my ($b) = @_;
    stop_nginx() if $NGINX_RUNNING;
    make_path("$PREFIX/logs");
    unlink "$PREFIX/logs/nginx.pid";
    write_files($b);
    $LOG_OFFSET = -s "$PREFIX/logs/error.log" // 0;
    my $out = `$NGINX -p $PREFIX -c nginx.conf 2>&1`;
    if ($? != 0) {
        fail("$b->{name}: nginx starts");
        diag($out);
        return 0;
    }
    $NGINX_RUNNING = 1;
    for (1 .. 200) { last if nginx_pid(); sleep 0.025 }
    wait_for_port($SERVER_PORT) or diag("nginx does not listen on $SERVER_PORT");
    return 1;
}

sub stop_nginx {
    return unless $NGINX_RUNNING;
    $NGINX_RUNNING = 0;
    my $pid = nginx_pid() or return;
    # Fast shutdown: a graceful one spends a second in the master's back-off.
    kill 'TERM', $pid;
    for (1 .. 400) { return unless alive($pid); sleep 0.01 }
    kill 'KILL', $pid;
    kill 'KILL', worker_pids();
}

sub reload_nginx {
    my ($b) = @_;
    write_files($b) if $b;
    my %old = map { $_ => 1 } worker_pids();
    kill 'HUP', nginx_pid();
    for (1 .. 400) {
        my @now = worker_pids();
        return 1 if @now && !grep { $old{$_} } @now;
        sleep 0.025;
    }
    diag("reload: old workers still running");
    return 0;
}

sub error_log_text {
    my $text = slurp("$PREFIX/logs/error.log");
    return length($text) > $LOG_OFFSET ? substr($text, $LOG_OFFSET) : '';
}

# ---- HTTP ----------------------------------------------------------------

sub raw_request {
    my ($method, $uri, $headers, $body) = @_;
    my $req = "$method $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    $req .= "$_\r\n" for @{ $headers // [] };
    $req .= "Content-Length: " . length($body) . "\r\n" if defined $body;
    $req .= "\r\n";
    $req .= $body if defined $body;
    return $req;
}

sub http_request {
    my ($raw, $timeout) = @_;
    $timeout //= 10;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $SERVER_PORT, Timeout => $timeout)
        or return { status => 0, error => "connect: $!", headers => [], body => '' };
    $s->autoflush(1);
    print $s $raw;
    my $sel = IO::Select->new($s);
    my $data = '';
    my $deadline = time + $timeout;
    while (1) {
        my $left = $deadline - time;
        last if $left <= 0;
        last unless $sel->can_read($left);
        my $n = sysread($s, my $chunk, 65536);
        last unless $n;
        $data .= $chunk;
    }
    close $s;
    return parse_response($data);
}

sub parse_response {
    my ($data) = @_;
    my ($head, $body) = split /\r\n\r\n/, $data, 2;
    my %r = (status => 0, headers => [], body => $body // '', raw => $data);
    return \%r unless defined $head && $head =~ m{^HTTP/1\.\d (\d{3})};
    $r{status} = $1;
    for my $line ((split /\r\n/, $head)[1 .. 1_000]) {
        last unless defined $line;
        push @{ $r{headers} }, [$1, $2] if $line =~ /^([^:]+):\s*(.*?)\s*$/;
    }
    if (grep { lc $_->[0] eq 'transfer-encoding' && $_->[1] =~ /chunked/i } @{ $r{headers} }) {
        my ($in, $out) = ($r{body}, '');
        while ($in =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $out .= substr($in, 0, $len, '');
            $in =~ s/^\r\n//;
        }
        $r{body} = $out;
    }
    return \%r;
}

sub header_values {
    my ($headers, $name) = @_;
    return map { $_->[1] } grep { lc $_->[0] eq lc $name } @$headers;
}

# ---- the test IdP ----------------------------------------------------------

sub idp_call {
    my ($method, $path, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $IDP_PORT, Timeout => 10)
        or die "test IdP: connect: $!";
    $s->autoflush(1);
    my $req = "$method $path HTTP/1.1\r\nHost: idp\r\nConnection: close\r\n";
    $req .= "Content-Type: application/json\r\nContent-Length: " . length($body // '') . "\r\n\r\n";
    $req .= $body // '';
    print $s $req;
    local $/;
    my $data = <$s>;
    close $s;
    my $r = parse_response($data // '');
    die "test IdP: $method $path: status $r->{status}\n" unless $r->{status} == 200;
    return $r->{body};
}

sub idp_setup { idp_call('POST', '/__control/setup', $JSON->encode($_[0] // {})) }
sub idp_requests { $JSON->decode(idp_call('GET', '/__control/requests?role=idp')) }
sub backend_requests { $JSON->decode(idp_call('GET', '/__control/requests?role=backend')) }

# ---- running blocks ----------------------------------------------------------

sub request_of {
    my ($b) = @_;
    my $text = substitute($b->{request}) // die "block '$b->{name}': no request\n";
    my ($line, $body) = split /\n\n/, $text, 2;
    my ($method, $uri) = split ' ', $line;
    return raw_request($method, $uri, [lines_of($b->{more_headers})], $body);
}

sub check_response {
    my ($b, $r, $tag) = @_;
    my $name = "$b->{name}$tag";
    if (defined $b->{error_code}) {
        is($r->{status}, $b->{error_code}, "$name: status") or return 0;
    }
    for my $line (lines_of($b->{response_headers})) {
        if ($line =~ /^!\s*(\S+)$/) {
            my @v = header_values($r->{headers}, $1);
            is(scalar @v, 0, "$name: no $1 header") or return 0;
        } elsif ($line =~ /^([^:]+):\s*(.*)$/) {
            my ($h, $want) = ($1, $2);
            my @v = header_values($r->{headers}, $h);
            ok(@v && !grep({ $_ ne $want } @v), "$name: $h is '$want'")
                or diag("got: " . join(' | ', @v)), return 0;
        }
    }
    for my $line (lines_of($b->{response_headers_like})) {
        my ($h, $re) = $line =~ /^([^:]+):\s*(.*)$/ or next;
        my @v = header_values($r->{headers}, $h);
        ok(@v && !grep({ $_ !~ /$re/ } @v), "$name: $h like /$re/")
            or diag("got: " . join(' | ', @v)), return 0;
    }
    if (defined $b->{response_body}) {
        is($r->{body}, substitute($b->{response_body}), "$name: body") or return 0;
    }
    if (defined $b->{response_body_like}) {
        my $re = substitute($b->{response_body_like});
        like($r->{body}, qr/$re/s, "$name: body like") or return 0;
    }
    return 1;
}

sub send_requests {
    my ($b) = @_;
    my $raw = request_of($b);
    my $timeout = $b->{timeout} // 10;
    if (my $n = $b->{concurrent}) {
        my @kids;
        for my $i (1 .. $n) {
            my $pid = fork();
            die "fork: $!" unless defined $pid;
            if (!$pid) {
                my $r = http_request($raw, $timeout);
                open my $fh, '>', "$PREFIX/concurrent.$i" or POSIX::_exit(1);
                print $fh $r->{raw} // '';
                close $fh;
                POSIX::_exit(0);
            }
            push @kids, $pid;
        }
        waitpid($_, 0) for @kids;
        my $ok = 1;
        for my $i (1 .. $n) {
            my $r = parse_response(slurp("$PREFIX/concurrent.$i"));
            unlink "$PREFIX/concurrent.$i";
            $ok &&= check_response($b, $r, " (concurrent $i/$n)");
            last unless $ok;
        }
        return $ok;
    }
    my $ok = 1;
    my $repeat = $b->{repeat} // 1;
    for my $i (1 .. $repeat) {
        my $tag = $repeat > 1 ? " (request $i/$repeat)" : '';
        $ok &&= check_response($b, http_request($raw, $timeout), $tag);
        last unless $ok;
    }
    return $ok;
}

sub log_matches {
    my ($text, $pattern) = @_;
    return $pattern =~ m{^/(.*)/$} ? scalar($text =~ /$1/) : index($text, $pattern) >= 0;
}

sub check_logs {
    my ($b, $text_of) = @_;
    my $ok = 1;
    for my $want (lines_of($b->{error_log})) {
        my $found = 0;
        for (1 .. 40) {
            last if $found = log_matches($text_of->(), $want);
            sleep 0.025;
        }
        $ok &&= ok($found, "$b->{name}: log has '$want'");
    }
    for my $unwanted (lines_of($b->{no_error_log})) {
        $ok &&= ok(!log_matches($text_of->(), $unwanted), "$b->{name}: log lacks '$unwanted'");
    }
    for my $line (lines_of($b->{error_log_count})) {
        my ($what, $n) = $line =~ /^(.*):\s*(\d+)$/ or next;
        my $count = grep { index($_, $what) >= 0 } split /\n/, $text_of->();
        $ok &&= is($count, $n, "$b->{name}: log has '$what' $n time(s)");
    }
    return $ok;
}

sub check_upstreams {
    my ($b) = @_;
    my $ok = 1;
    my $idp = idp_requests();
    my $backend = backend_requests();
    $ok &&= is(scalar @$idp, $b->{idp_calls}, "$b->{name}: IdP calls") if defined $b->{idp_calls};
    $ok &&= is(scalar @$backend, $b->{backend_calls}, "$b->{name}: backend calls")
        if defined $b->{backend_calls};
    if (defined $b->{idp_request}) {
        my $last = $idp->[-1];
        ok($last, "$b->{name}: the IdP got a request") or return 0;
        for my $line (lines_of($b->{idp_request})) {
            if ($line =~ /^method:\s*(.*)$/) {
                $ok &&= is($last->{method}, $1, "$b->{name}: IdP method");
            } elsif ($line =~ /^path:\s*(.*)$/) {
                $ok &&= is($last->{path}, $1, "$b->{name}: IdP path");
            } elsif ($line =~ /^body:\s*(.*)$/) {
                $ok &&= is($last->{body}, $1, "$b->{name}: IdP body");
            } elsif ($line =~ /^body_like:\s*(.*)$/) {
                $ok &&= like($last->{body}, qr/$1/, "$b->{name}: IdP body like");
            } elsif ($line =~ /^!header\s+(\S+)$/) {
                my @v = header_values($last->{headers}, $1);
                $ok &&= is(scalar @v, 0, "$b->{name}: IdP got no $1");
            } elsif ($line =~ /^header\s+([^:]+):\s*(.*)$/) {
                my ($h, $want) = ($1, $2);
                my @v = header_values($last->{headers}, $h);
                $ok &&= is_deeply(\@v, [$want], "$b->{name}: IdP got $h");
            } else {
                die "block '$b->{name}': bad idp_request line '$line'\n";
            }
        }
    }
    if (defined $b->{backend_headers} || defined $b->{backend_uri}) {
        my $last = $backend->[-1];
        ok($last, "$b->{name}: the backend got a request") or return 0;
        $ok &&= is($last->{path}, substitute($b->{backend_uri}), "$b->{name}: backend URI")
            if defined $b->{backend_uri};
        for my $line (lines_of($b->{backend_headers})) {
            if ($line =~ /^!\s*(\S+)$/) {
                my @v = header_values($last->{headers}, $1);
                $ok &&= is(scalar @v, 0, "$b->{name}: backend got no $1");
            } elsif ($line =~ /^([^:*]+)\*:\s*(\d+)$/) {
                my @v = header_values($last->{headers}, $1);
                $ok &&= is(scalar @v, $2, "$b->{name}: backend got $1 $2 time(s)");
            } elsif ($line =~ /^([^:]+):\s*(.*)$/) {
                my ($h, $want) = ($1, $2);
                my @v = header_values($last->{headers}, $h);
                $ok &&= is_deeply(\@v, [$want], "$b->{name}: backend got $h");
            }
        }
    }
    return $ok;
}

sub run_block {
    my ($b) = @_;
    if (defined $b->{skip_reason}) {
        SKIP: { skip("$b->{name}: $b->{skip_reason}", 1) }
        return;
    }
    if (exists $b->{must_die}) {
        write_files($b);
        make_path("$PREFIX/logs");
        my $out = `$NGINX -t -p $PREFIX -c nginx.conf 2>&1`;
        isnt($?, 0, "$b->{name}: nginx -t fails") or diag($out);
        check_logs($b, sub { $out }) or diag($out);
        return;
    }
    idp_setup($b->{idp} ? $JSON->decode(substitute($b->{idp})) : {});
    start_nginx($b) or return;
    my $ok = send_requests($b);
    $ok = check_upstreams($b) && $ok;
    $ok = check_logs($b, \&error_log_text) && $ok;
    stop_nginx();
    unless ($ok) {
        my @lines = split /\n/, error_log_text();
        my @serious = grep { /\[(warn|error|crit|alert|emerg)\]/ } @lines;
        diag("error.log warnings and errors:\n" . join("\n", @serious[0 .. ($#serious < 9 ? $#serious : 9)]))
            if @serious;
        my @tail = grep { defined } @lines[($#lines > 29 ? $#lines - 29 : 0) .. $#lines];
        diag("error.log tail:\n" . join("\n", @tail));
    }
}

sub run_tests {
    my (%opt) = @_;
    start_servers();
    my $data = do { no strict 'refs'; local $/; my $fh = \*{"main::DATA"}; <$fh> } // '';
    for my $b (parse_blocks($data)) {
        $b->{config} //= $opt{default_config};
        $b->{http_config} //= $opt{default_http_config};
        run_block($b);
    }
    done_testing();
}

1;
