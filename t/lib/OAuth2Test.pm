package OAuth2Test;

=pod

=head1 NAME

OAuth2Test - end-to-end harness for ngx_http_auth_oauth2_token_module

=head1 SYNOPSIS

    use strict; use warnings;
    use lib 't/lib';
    use OAuth2Test;
    run_tests();
    __DATA__

    === TEST 1: an active token reaches the backend
    --- config
    location / { ... proxy_pass http://backend; }
    --- idp
    {"tok1": {"json": {"active": true, "sub": "alice"}}}
    --- request
    GET /api/x?a=1
    --- more_headers
    Authorization: Bearer tok1
    --- error_code: 200
    --- backend_uri: /api/x?a=1

=head1 DESCRIPTION

Runs the real nginx with the real module against F<t/idp/test_idp.py>, one
Python process that is both a scriptable IdP and an echo backend, and records
what each receives. Perl core modules only.

Each .t file gets its own prefix directory (a temporary directory holding
nginx.conf, logs/ and the user files), its own four ports, and one test IdP
process started by C<run_tests> (or C<start_servers>) and killed at exit.
Every block starts a fresh nginx and stops it at its end (QUIT, then KILL after
3 s); nginx is also stopped at exit, on die, and on SIGINT/SIGTERM/SIGHUP.

Environment: C<TEST_NGINX_BINARY> (default F<objs/nginx>),
C<TEST_NGINX_MODULE> (default F<objs/ngx_http_auth_oauth2_token_module.so>;
always loaded with C<load_module>), C<TEST_NGINX_KEEP=1> keeps the prefix
directory (its path is printed), C<TEST_IDP_PYTHON> (default python3).
A missing binary or module is a BAIL_OUT telling to run C<make>.

=head2 Blocks

A block starts with C<=== title>; the title names every assertion of the
block. Sections follow: C<--- name> and the lines up to the next C<--- > or
C<=== > line, or the one-line form C<--- name: value>. Trailing blank lines of
a section are dropped, and so is the final newline: a multi-line value never
ends in "\n". Between the title and the first section only blank lines and
C<#> comment lines may stand. An unknown section name, a section given twice, a one-line
section with extra lines, a malformed number or text between the title and
the first section make the whole file die before anything runs.

These placeholders are replaced in every section: C<$TEST_NGINX_SERVER_PORT>,
C<$TEST_NGINX_IDP_PORT>, C<$TEST_NGINX_BACKEND_PORT>, C<$TEST_NGINX_CLOSED_PORT>
(nothing listens there: connections are refused; a block may still have
nginx listen on it) and C<$TEST_NGINX_PREFIX> (the prefix directory).

=head2 Configuration sections

  main_config      text for the main (top) level of nginx.conf
  http_config      text inside http{}, after the harness's upstreams
  config           text inside the test server{}
  workers: N       worker_processes (default 1)
  user_files       files written into the prefix before nginx starts:
                   ">>> name" starts a file (name relative to the prefix,
                   subdirectories created); its lines follow, each written
                   with "\n". ">>> name (no newline)" leaves out the final
                   newline, ">>> name (crlf)" ends every line with "\r\n".
                   Trailing blank lines of each file are dropped.
  must_die         run `nginx -t` instead of starting nginx and expect a
                   non-zero exit; error_log / no_error_log / error_log_count
                   then apply to its output (stdout and stderr)
  skip_reason: T   skip the block, giving T as the reason

The generated nginx.conf: main part (daemon on; master_process on;
worker_processes; error_log logs/error.log debug; pid logs/nginx.pid;
load_module MODULE; main_config), events { worker_connections 1024; } and
http { access_log logs/access.log; temp paths in the prefix;
proxy_http_version 1.1; proxy_set_header Connection ""; upstream idp and
upstream backend (127.0.0.1, keepalive 8); http_config; server { listen
127.0.0.1:$TEST_NGINX_SERVER_PORT; server_name localhost; config } }.
C<run_tests(default_config =E<gt> TEXT, default_http_config =E<gt> TEXT)>
gives the text for blocks that have no config / http_config section.

=head2 Request sections

  idp              JSON object TOKEN => behaviour for the test IdP (see
                   t/idp/test_idp.py). Every block sets it (empty when
                   absent), which also clears the IdP's and the backend's
                   recorded requests and per-token counters.
  request          "METHOD URI [HTTP/1.x]"; optionally a blank line and a
                   body (lines joined with "\n", Content-Length added).
                   Sent with "Host: localhost" and "Connection: close"
                   unless more_headers gives Host / Connection.
  more_headers     request headers, one per line, sent exactly as written
                   (duplicates allowed)
  repeat: N        send the request N times, one after the other; every
                   response must meet the response expectations
  concurrent: N    open N connections, then send all N requests at once
                   (non-blocking sockets, one process); every response
                   must meet them
  timeout: S       client timeout per request, in seconds (default 10)

=head2 Expectations

Checked on every response:

  error_code: N            the status (default 200 when there is a request)
  response_headers         "Name: value": present, every value equals it;
                           "!Name": absent; "Name*: N": exactly N times
  response_headers_like    "Name: regex": present, every value matches
  response_body            the exact body (chunked bodies are decoded)
  response_body_like       a regex on the body (/s)

Checked once per block, after the requests:

  idp_calls: N             requests the IdP got during the block
  backend_calls: N         requests the backend got during the block
  idp_request              on the IdP's last request, one check a line:
                           "method: M", "path: P" (with query),
                           "header Name: value" (exactly one such header,
                           with that value), "header Name*: N" (N times),
                           "!header Name", "body: exact", "body_like: regex"
  backend_request          the same checks on the backend's last request
  backend_headers          on the backend's last request: "Name: value"
                           (exactly one, that value), "!Name", "Name*: N"
  backend_uri: U           the backend's last request URI (with query)
  error_log                one per line: a substring, or /regex/, that must
                           appear in this block's part of error.log (waits
                           up to 1 s for it)
  no_error_log             one per line: must not appear
  error_log_count          "substring: N": exactly N lines contain it

When any assertion of a block fails, its error.log lines of level warn and
above, and the last 30 lines, are printed with diag.

=head2 Helpers

Exported by default, with run_tests:

  start_servers()          choose ports and start the test IdP (idempotent;
                           run_tests and start_nginx call it)
  start_nginx($block)      write nginx.conf and user files from a hashref of
                           sections (as block_from makes) and start nginx;
                           waits for the workers; false (and a failed test)
                           when nginx does not start
  stop_nginx()             QUIT, then KILL master and workers after 3 s
  reload_nginx([$block])   optionally rewrite the files, send HUP, wait until
                           the new workers run and the old ones are gone
                           (false, with diag, on a failed reload)
  http_request($req [, $timeout])
                           one request: $req is raw bytes or a hashref
                           {method, uri, headers => ["Name: v" | [n, v], ...],
                           body, version, timeout, port}. Returns {status,
                           reason, version, headers => [[name, value], ...]
                           in order, body, raw, complete, error}
  http_requests(\@reqs [, $timeout])
                           the same, all at once; returns the responses in order
  raw_request($method, $uri, \@headers, $body)
                           the raw bytes http_request would send
  parse_response($bytes [, $method, $eof])
  idp_setup(\%behaviours)  also clears recorded requests and counters
  idp_reset()
  idp_requests(), backend_requests()
                           arrayrefs of {method, path, headers => [[n, v]...],
                           body, version}, oldest first
  error_log_text()         error.log since the current block's nginx started
  server_port(), idp_port(), backend_port(), closed_port(), prefix()
  nginx_pid(), worker_pids()
  block_from(%sections)    a block hashref for start_nginx (name defaults to
                           'custom')

=cut

use strict;
use warnings;
use Exporter 'import';
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_REUSEADDR);
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use JSON::PP;

our @EXPORT = qw(run_tests start_servers start_nginx stop_nginx reload_nginx
  http_request http_requests raw_request parse_response
  idp_setup idp_reset idp_requests backend_requests
  error_log_text server_port idp_port backend_port closed_port prefix
  nginx_pid worker_pids block_from);

my $ROOT   = abs_path(dirname(__FILE__) . '/../..');
my $NGINX  = $ENV{TEST_NGINX_BINARY} || "$ROOT/objs/nginx";
my $MODULE = $ENV{TEST_NGINX_MODULE} || "$ROOT/objs/ngx_http_auth_oauth2_token_module.so";
$NGINX  = abs_path($NGINX)  if -e $NGINX;
$MODULE = abs_path($MODULE) if -e $MODULE;
my $PYTHON = $ENV{TEST_IDP_PYTHON} || 'python3';

my $QUIT_TIMEOUT  = 3;     # seconds nginx gets to quit gracefully
my $START_TIMEOUT = 10;    # seconds for nginx's workers or the IdP to come up
my $LOG_WAIT      = 1;     # seconds error_log expectations wait for their lines

# Section name => kind: text (any lines), line (one line), int, num, workers, flag (no value).
my %SECTIONS = (
    main_config => 'text', http_config => 'text', config => 'text', workers => 'workers',
    user_files => 'text', must_die => 'flag', skip_reason => 'line',
    idp => 'text', request => 'text', more_headers => 'text',
    repeat => 'int', concurrent => 'int', timeout => 'num',
    error_code => 'int', response_headers => 'text', response_headers_like => 'text',
    response_body => 'text', response_body_like => 'text',
    idp_calls => 'int', backend_calls => 'int', idp_request => 'text', backend_request => 'text',
    backend_headers => 'text', backend_uri => 'line',
    error_log => 'text', no_error_log => 'text', error_log_count => 'text',
);
my @RESPONSE_SECTIONS = qw(error_code response_headers response_headers_like response_body
  response_body_like repeat concurrent timeout more_headers);

my $JSON  = JSON::PP->new->canonical->allow_nonref;
my $OWNER = $$;
my $PREFIX;
my %RESERVED;    # port => the bound, non-listening socket that keeps it ours
my ($SERVER_PORT, $IDP_PORT, $BACKEND_PORT, $CLOSED_PORT);
my $IDP_PID;
my $NGINX_RUNNING = 0;
my $CURRENT;           # the block the running nginx was started (or reloaded) with
my $LOG_OFFSET = 0;    # error.log size when the current nginx started

sub server_port  { $SERVER_PORT }
sub idp_port     { $IDP_PORT }
sub backend_port { $BACKEND_PORT }
sub closed_port  { $CLOSED_PORT }
sub prefix       { $PREFIX }

# ---- setup and teardown ------------------------------------------------------

sub make_prefix {
    return if $PREFIX;
    $PREFIX = tempdir('oauth2-test-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_KEEP});
    chmod 0755, $PREFIX;    # workers run as nobody: they read user files and write temp files here
    make_path("$PREFIX/logs");
    diag("TEST_NGINX_KEEP: the prefix is $PREFIX") if $ENV{TEST_NGINX_KEEP};
}

# Ports below the kernel's ephemeral range (no outgoing connection can take
# them), from a base that differs between the files `prove -j` runs at once.
# A port stays ours for the whole file: a socket is bound to it, without
# SO_REUSEADDR while binding (so another harness's probe fails there) and with
# it afterwards (so nginx and the IdP, which set it too, can still listen).
# Bound but not listening, it refuses connections.
my $NEXT_PORT;

sub reserve_port {
    $NEXT_PORT //= 20000 + ($$ * 17) % 11000;
    for (1 .. 12000) {
        my $port = $NEXT_PORT++;
        $NEXT_PORT = 20000 if $NEXT_PORT >= 32000;
        next if $RESERVED{$port};
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp')
            or next;
        setsockopt($s, SOL_SOCKET, SO_REUSEADDR, 1) or next;
        $RESERVED{$port} = $s;
        return $port;
    }
    BAIL_OUT('no free TCP port between 20000 and 32000');
}

sub release_port { my ($p) = @_; close(delete $RESERVED{$p}) if $p && $RESERVED{$p} }

sub start_servers {
    return if $IDP_PID;
    BAIL_OUT("no nginx binary at $NGINX: run `make` first (or set TEST_NGINX_BINARY)") unless -x $NGINX;
    BAIL_OUT("no module at $MODULE: run `make` first (or set TEST_NGINX_MODULE)") unless -f $MODULE;
    make_prefix();
    $SERVER_PORT = reserve_port();
    $CLOSED_PORT = reserve_port();
    my $why = '';
    for my $attempt (1 .. 3) {
        $IDP_PORT     = reserve_port();
        $BACKEND_PORT = reserve_port();
        return if spawn_idp(\$why);
        release_port($_) for $IDP_PORT, $BACKEND_PORT;
    }
    BAIL_OUT("the test IdP (t/idp/test_idp.py) did not start:\n$why");
}

sub spawn_idp {
    my ($why) = @_;
    my $ready = "$PREFIX/idp.ready";
    my $log = "$PREFIX/logs/idp.log";
    unlink $ready;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        $SIG{PIPE} = 'DEFAULT';
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        exec $PYTHON, "$ROOT/t/idp/test_idp.py", '--idp-port', $IDP_PORT,
            '--backend-port', $BACKEND_PORT, '--ready-file', $ready
            or POSIX::_exit(127);
    }
    my $deadline = time + $START_TIMEOUT;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $$why = slurp($log);
            return 0;
        }
        if (-e $ready && can_connect($IDP_PORT) && can_connect($BACKEND_PORT)) {
            $IDP_PID = $pid;
            return 1;
        }
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    $$why = "not ready after ${START_TIMEOUT}s\n" . slurp($log);
    return 0;
}

sub can_connect {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 1)
        or return 0;
    close $s;
    return 1;
}

sub cleanup {
    return unless defined $OWNER && $$ == $OWNER;
    stop_nginx() if $NGINX_RUNNING;
    if ($IDP_PID) {
        kill 'KILL', $IDP_PID;
        waitpid($IDP_PID, 0);
        undef $IDP_PID;
    }
}

END {
    my $rc = $?;
    cleanup();
    $? = $rc;
}
$SIG{$_} = sub { cleanup(); exit 1 } for qw(INT TERM HUP);
$SIG{PIPE} = 'IGNORE';    # a server closing early must not kill the test

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    binmode $fh;
    local $/;
    my $text = <$fh>;
    return $text // '';
}

sub spew {
    my ($file, $text) = @_;
    make_path(dirname($file));
    open my $fh, '>', $file or die "cannot write $file: $!\n";
    binmode $fh;
    print $fh $text;
    close $fh or die "cannot write $file: $!\n";
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

# Non-blank lines of a section, placeholders replaced.
sub lines_of {
    my ($text) = @_;
    return () unless defined $text;
    return grep { /\S/ } map { s/\r\z//r } split /\n/, substitute($text);
}

# ---- blocks ------------------------------------------------------------------

sub parse_blocks {
    my ($text, $origin) = @_;
    $origin //= 'DATA';
    my (@blocks, $block, $section);
    my $where = sub { "$origin line $_[0]" };
    my $finish = sub {
        return unless $section;
        my ($name, $inline, $lines, $at) = @$section;
        undef $section;
        my $value;
        if (defined $inline) {
            die $where->($at) . ": section '$name' has a value on its line and more lines after it\n"
                if grep { /\S/ } @$lines;
            $value = $inline;
        } else {
            pop @$lines while @$lines && $lines->[-1] !~ /\S/;
            $value = join "\n", @$lines;
        }
        my $kind = $SECTIONS{$name};
        my $ok = $kind eq 'int' ? $value =~ /^\s*\d+\s*$/
            : $kind eq 'num' ? $value =~ /^\s*\d+(?:\.\d+)?\s*$/
            : $kind eq 'workers' ? $value =~ /^\s*(?:\d+|auto)\s*$/
            : $kind eq 'flag' ? $value !~ /\S/
            : $kind eq 'line' ? $value !~ /\n/
            : 1;
        die $where->($at) . ": section '$name' wants "
            . { int => 'a whole number', num => 'a number', workers => 'a number or auto',
                flag => 'no value', line => 'one line' }->{$kind} . ", got '$value'\n"
            unless $ok;
        $value =~ s/^\s+|\s+$//g if $kind =~ /^(?:int|num|workers|line)$/;
        $block->{$name} = $value;
    };
    my $n = 0;
    for my $line (split /\n/, $text) {
        $n++;
        if ($line =~ /^=== (.*?)\s*$/) {
            $finish->();
            $block = { name => $1, line => $n };
            push @blocks, $block;
            next;
        }
        if ($line =~ /^--- ?(.*?)\s*$/ && $block) {
            $finish->();
            my $head = $1;
            my ($name, $inline) = $head =~ /^(\w+)(?:\s*:\s*(.*))?$/
                or die $where->($n) . ": bad section line '$line'\n";
            die $where->($n) . ": unknown section '$name' in block '$block->{name}'\n" unless $SECTIONS{$name};
            die $where->($n) . ": section '$name' given twice in block '$block->{name}'\n"
                if exists $block->{$name};
            $section = [$name, $inline, [], $n];
            next;
        }
        if ($section) {
            push @{ $section->[2] }, $line;
        } elsif ($block && $line =~ /\S/ && $line !~ /^\s*#/) {
            die $where->($n) . ": text before the first section of block '$block->{name}'"
                . " (a mistyped '--- ' line?)\n";
        }
    }
    $finish->();
    for my $b (@blocks) {
        my @needs_request = grep { defined $b->{$_} } @RESPONSE_SECTIONS;
        die "block '$b->{name}' ($origin line $b->{line}): must_die with a request\n"
            if exists $b->{must_die} && defined $b->{request};
        die "block '$b->{name}' ($origin line $b->{line}): @needs_request without a request\n"
            if @needs_request && !defined $b->{request} && !exists $b->{must_die};
        die "block '$b->{name}' ($origin line $b->{line}): repeat and concurrent together\n"
            if defined $b->{repeat} && defined $b->{concurrent};
    }
    return @blocks;
}

sub block_from {
    my %b = @_;
    $b{name} //= 'custom';
    for (keys %b) {
        die "block_from: unknown section '$_'\n" unless $SECTIONS{$_} || $_ eq 'name' || $_ eq 'line';
    }
    return \%b;
}

sub expected_workers {
    my ($b) = @_;
    my $w = $b->{workers} // 1;
    return $w eq 'auto' ? 1 : $w;    # auto: at least one
}

# $prefix and $port (default: the harness's own) let RedisTest.pm write the
# configuration of a second nginx; placeholders keep their meaning.
sub nginx_conf {
    my ($b, $prefix, $port) = @_;
    $prefix //= $PREFIX;
    $port   //= $SERVER_PORT;
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
    worker_connections 1024;
}

http {
    access_log logs/access.log;
    client_body_temp_path $prefix/client_body_temp;
    proxy_temp_path $prefix/proxy_temp;
    fastcgi_temp_path $prefix/fastcgi_temp;
    uwsgi_temp_path $prefix/uwsgi_temp;
    scgi_temp_path $prefix/scgi_temp;
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
        listen 127.0.0.1:$port;
        server_name localhost;

$config
    }
}
CONF
}

sub write_files {
    my ($b) = @_;
    make_prefix();
    make_path("$PREFIX/logs");
    spew("$PREFIX/nginx.conf", nginx_conf($b));
    return unless defined $b->{user_files};
    my @files;
    for my $line (split /\n/, substitute($b->{user_files})) {
        if ($line =~ /^>>> (\S+)(?:\s+\((no newline|crlf)\))?\s*$/) {
            push @files, { name => $1, style => $2 // '', lines => [] };
            next;
        }
        die "user_files: text before the first '>>> name' line\n" unless @files;
        push @{ $files[-1]{lines} }, $line;
    }
    for my $f (@files) {
        die "user_files: '$f->{name}' must stay inside the prefix\n"
            if $f->{name} =~ m{^/|(?:^|/)\.\.(?:/|$)};
        my @lines = @{ $f->{lines} };
        pop @lines while @lines && $lines[-1] !~ /\S/;
        my $eol = $f->{style} eq 'crlf' ? "\r\n" : "\n";
        my $text = join $eol, @lines;
        $text .= $eol unless $f->{style} eq 'no newline' || !@lines;
        spew("$PREFIX/$f->{name}", $text);
    }
}

# ---- nginx -------------------------------------------------------------------

sub run_command {
    my (@argv) = @_;
    my $pid = open(my $out, '-|');
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        $SIG{PIPE} = 'DEFAULT';
        open STDIN, '<', '/dev/null';
        open STDERR, '>&', \*STDOUT;
        exec @argv or POSIX::_exit(127);
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    return ($?, $text);
}

sub nginx_argv {
    my (@extra) = @_;
    return ($NGINX, @extra, '-p', "$PREFIX/", '-c', "$PREFIX/nginx.conf", '-e', "$PREFIX/logs/error.log");
}

sub nginx_pid {
    return '' unless $PREFIX;
    my $pid = slurp("$PREFIX/logs/nginx.pid");
    $pid =~ s/\s+//g;
    return $pid =~ /^\d+$/ ? $pid : '';
}

# [pid, process title] of every child of the nginx master.
sub nginx_children {
    my $master = shift // nginx_pid() or return ();
    my @kids;
    opendir(my $dh, '/proc') or return ();
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my $stat = slurp("/proc/$pid/stat") or next;
        my ($ppid) = $stat =~ /^\d+ \(.*\) \S+ (\d+)/s or next;
        next unless $ppid == $master;
        (my $title = slurp("/proc/$pid/cmdline")) =~ s/\0.*//s;
        push @kids, [$pid, $title];
    }
    return sort { $a->[0] <=> $b->[0] } @kids;
}

sub worker_pids { map { $_->[0] } grep { $_->[1] =~ /worker process/ } nginx_children() }

# The daemonised master is not our child: once it exits it may stay a zombie
# until init reaps it, which counts as gone.
sub alive {
    my ($pid) = @_;
    return 0 unless $pid && kill 0, $pid;
    return slurp("/proc/$pid/status") !~ /^State:\s+Z/m;
}

sub start_nginx {
    my ($b) = @_;
    $b = block_from(%{ $b // {} }) unless defined $b && defined $b->{name};
    start_servers();
    stop_nginx() if $NGINX_RUNNING;
    unlink "$PREFIX/logs/nginx.pid";
    write_files($b);
    $LOG_OFFSET = -s "$PREFIX/logs/error.log" // 0;
    my ($rc, $out) = run_command(nginx_argv());
    if ($rc != 0) {
        fail("$b->{name}: nginx starts");
        diag("nginx exited with status " . ($rc >> 8) . ":\n$out");
        return 0;
    }
    $NGINX_RUNNING = 1;
    $CURRENT = $b;
    my $want = expected_workers($b);
    my $deadline = time + $START_TIMEOUT;
    while (time < $deadline) {
        return 1 if nginx_pid() && worker_pids() >= $want;
        sleep 0.01;
    }
    fail("$b->{name}: nginx starts its workers");
    diag("no pid file or fewer than $want worker(s) after ${START_TIMEOUT}s; error.log:\n" . log_tail(30));
    return 0;
}

sub stop_nginx {
    return 0 unless $NGINX_RUNNING;
    $NGINX_RUNNING = 0;
    my $master = nginx_pid() or return 0;
    my @pids = ($master, map { $_->[0] } nginx_children($master));
    kill 'QUIT', $master;
    my $deadline = time + $QUIT_TIMEOUT;
    while (time < $deadline) {
        return 1 unless grep { alive($_) } @pids;
        sleep 0.01;
    }
    my @left = grep { alive($_) && slurp("/proc/$_/cmdline") =~ /^nginx/ } @pids;
    note("nginx did not quit within ${QUIT_TIMEOUT}s: KILL @left");
    kill 'KILL', @left;
    $deadline = time + 2;
    sleep 0.01 while time < $deadline && grep { alive($_) } @left;
    unlink "$PREFIX/logs/nginx.pid";
    return 1;
}

sub reload_nginx {
    my ($b) = @_;
    unless ($NGINX_RUNNING && nginx_pid()) {
        diag('reload_nginx: nginx is not running');
        return 0;
    }
    if ($b) {
        $b = block_from(%$b) unless defined $b->{name};
        write_files($b);
        $CURRENT = $b;
    }
    my $master = nginx_pid();
    my %old = map { $_->[0] => 1 } nginx_children($master);
    my $want = expected_workers($CURRENT // {});
    my $mark = -s "$PREFIX/logs/error.log" // 0;
    kill 'HUP', $master;
    my $deadline = time + $START_TIMEOUT;
    while (time < $deadline) {
        my @kids = nginx_children($master);
        my @new = grep { !$old{ $_->[0] } && $_->[1] =~ /worker process$/ } @kids;
        return 1 if @new >= $want && !grep { $old{ $_->[0] } } @kids;
        my $log = substr(slurp("$PREFIX/logs/error.log"), $mark);
        if ($log =~ /^(.*\[emerg\].*)$/m) {
            diag("reload_nginx: the new configuration was refused: $1");
            return 0;
        }
        sleep 0.01;
    }
    diag("reload_nginx: the new workers did not replace the old ones within ${START_TIMEOUT}s");
    return 0;
}

sub error_log_text {
    return '' unless $PREFIX;
    my $text = slurp("$PREFIX/logs/error.log");
    return length($text) > $LOG_OFFSET ? substr($text, $LOG_OFFSET) : '';
}

sub log_tail {
    my ($n, $text) = @_;
    my @lines = split /\n/, $text // error_log_text();
    return join "\n", @lines[($#lines >= $n ? $#lines - $n + 1 : 0) .. $#lines];
}

# ---- HTTP client ---------------------------------------------------------------

sub raw_request {
    my ($method, $uri, $headers, $body) = @_;
    return build_request({ method => $method, uri => $uri, headers => $headers, body => $body });
}

sub build_request {
    my ($req) = @_;
    return $req unless ref $req;
    my @headers = map { ref $_ ? "$_->[0]: $_->[1]" : $_ } @{ $req->{headers} // [] };
    my %has = map { /^\s*([^:]+?)\s*:/ ? (lc $1 => 1) : () } @headers;
    my $body = $req->{body};
    my $raw = sprintf "%s %s %s\r\n", $req->{method} // 'GET', $req->{uri} // '/',
        $req->{version} // 'HTTP/1.1';
    $raw .= "Host: localhost\r\n" unless $has{host};
    $raw .= "Connection: close\r\n" unless $has{connection};
    $raw .= "$_\r\n" for @headers;
    $raw .= "Content-Length: " . length($body) . "\r\n"
        if defined $body && !$has{'content-length'} && !$has{'transfer-encoding'};
    $raw .= "\r\n";
    $raw .= $body if defined $body;
    return $raw;
}

sub http_request {
    my ($req, $timeout) = @_;
    return (http_requests([$req], $timeout))[0];
}

# Sends every request on its own connection at once and reads the responses
# until each is complete (by Content-Length, chunked framing or EOF), or the
# timeout passes. Hashref requests may name their own port and timeout.
sub http_requests {
    my ($reqs, $timeout) = @_;
    my @conns;
    for my $req (@$reqs) {
        my $raw = build_request($req);
        my $port = (ref $req && $req->{port}) || $SERVER_PORT;
        my $t = (ref $req && $req->{timeout}) || $timeout || 10;
        my ($method) = $raw =~ /^(\S+)/;
        my $c = { out => $raw, in => '', method => $method // '', timeout => $t };
        $c->{sock} = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
            Timeout => $t);
        if ($c->{sock}) {
            $c->{sock}->blocking(0);
        } else {
            @$c{qw(done error)} = (1, "connect to port $port: $!");
        }
        push @conns, $c;
    }
    my $start = time;
    while (my @open = grep { !$_->{done} } @conns) {
        my $now = time;
        for my $c (@open) {
            next if $now - $start < $c->{timeout};
            @$c{qw(done error)} = (1, "timeout after $c->{timeout}s");
        }
        @open = grep { !$_->{done} } @open or last;
        my (%by_fd, $r, $w);
        $r = IO::Select->new;
        $w = IO::Select->new;
        for my $c (@open) {
            $by_fd{ fileno $c->{sock} } = $c;
            $r->add($c->{sock});
            $w->add($c->{sock}) if length $c->{out};
        }
        my ($readable, $writable) = IO::Select->select($r, $w, undef, 0.1);
        for my $s (@{ $writable // [] }) {
            my $c = $by_fd{ fileno $s };
            my $n = syswrite($s, $c->{out});
            if (defined $n) {
                substr($c->{out}, 0, $n, '');
            } elsif (!$!{EAGAIN} && !$!{EWOULDBLOCK} && !$!{EINTR}) {
                $c->{write_error} = "write: $!";    # the server closed early: read what it said
                $c->{out} = '';
            }
        }
        for my $s (@{ $readable // [] }) {
            my $c = $by_fd{ fileno $s };
            my $n = sysread($s, my $buf, 65536);
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
                @$c{qw(done error)} = (1, "read: $!");
            } elsif ($n == 0) {
                @$c{qw(done eof)} = (1, 1);
            } else {
                $c->{in} .= $buf;
                $c->{done} = 1 if parse_response($c->{in}, $c->{method})->{complete};
            }
        }
    }
    my @responses;
    for my $c (@conns) {
        close $c->{sock} if $c->{sock};
        my $r = parse_response($c->{in}, $c->{method}, $c->{eof});
        $r->{error} //= $c->{error} // $c->{write_error};
        $r->{error} //= 'incomplete response' unless $r->{complete};
        push @responses, $r;
    }
    return @responses;
}

# Parses what a server sent: {status, reason, version, headers, body, raw,
# complete}. Interim 1xx responses are skipped; chunked bodies are decoded.
sub parse_response {
    my ($data, $method, $eof) = @_;
    $data //= '';
    my %r = (status => 0, reason => '', headers => [], body => '', raw => $data, complete => 0);
    my $rest = $data;
    my @head;
    while (1) {
        my $end = index($rest, "\r\n\r\n");
        if ($end < 0) {
            $r{error} = 'no complete response header' if $eof;
            return \%r;
        }
        my @lines = split /\r\n/, substr($rest, 0, $end);
        $rest = substr($rest, $end + 4);
        my $status = shift(@lines) // '';
        unless ($status =~ m{^HTTP/(\d\.\d) (\d{3})(?: (.*))?$}) {
            $r{error} = "bad status line '$status'";
            return \%r;
        }
        @r{qw(version status reason)} = ($1, $2, $3 // '');
        @head = @lines;
        last unless $r{status} >= 100 && $r{status} < 200 && $r{status} != 101;
    }
    for my $line (@head) {
        push @{ $r{headers} }, [$1, $2] if $line =~ /^([^:\s]+)\s*:[ \t]*(.*?)[ \t]*$/;
    }
    my ($te) = header_values($r{headers}, 'Transfer-Encoding');
    my ($cl) = header_values($r{headers}, 'Content-Length');
    if (($method // '') eq 'HEAD' || $r{status} == 204 || $r{status} == 304) {
        $r{complete} = 1;
    } elsif (defined $te && $te =~ /chunked/i) {
        my ($pos, $body) = (0, '');
        while (1) {
            my $nl = index($rest, "\r\n", $pos);
            last if $nl < 0;
            my $size = substr($rest, $pos, $nl - $pos);
            unless ($size =~ /^([0-9a-fA-F]+)/) {
                $r{error} = "bad chunk size '$size'";
                last;
            }
            my $len = hex $1;
            $pos = $nl + 2;
            if ($len == 0) {
                $r{complete} = 1 if substr($rest, $pos, 2) eq "\r\n" || index($rest, "\r\n\r\n", $pos) >= 0;
                last;
            }
            last if length($rest) < $pos + $len + 2;
            $body .= substr($rest, $pos, $len);
            $pos += $len + 2;
        }
        $r{body} = $body;
    } elsif (defined $cl && $cl =~ /^\d+$/) {
        $r{body} = substr($rest, 0, $cl);
        $r{complete} = length($rest) >= $cl ? 1 : 0;
    } else {
        $r{body} = $rest;
        $r{complete} = $eof ? 1 : 0;
    }
    return \%r;
}

sub header_values {
    my ($headers, $name) = @_;
    return map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $headers // [] };
}

# ---- the test IdP ------------------------------------------------------------

sub idp_call {
    my ($method, $path, $body) = @_;
    start_servers();
    my $r = http_request({ port => $IDP_PORT, method => $method, uri => $path, body => $body,
        headers => ['Content-Type: application/json'], timeout => 10 });
    die "test IdP: $method $path: " . ($r->{error} // "status $r->{status}") . " $r->{body}\n"
        unless $r->{status} == 200;
    return $r->{body};
}

sub idp_setup        { idp_call('POST', '/__control/setup', $JSON->encode($_[0] // {})) }
sub idp_reset        { idp_call('POST', '/__control/reset', '') }
sub idp_requests     { $JSON->decode(idp_call('GET', '/__control/requests?role=idp')) }
sub backend_requests { $JSON->decode(idp_call('GET', '/__control/requests?role=backend')) }

# ---- running blocks ------------------------------------------------------------

sub block_request {
    my ($b) = @_;
    my ($line, $body) = split /\n\n/, substitute($b->{request}), 2;
    $line =~ s/^\s+|\s+$//g;
    my ($method, $uri, $version, @extra) = split ' ', $line;
    die "block '$b->{name}': request line wants 'METHOD URI [HTTP/1.x]', got '$line'\n"
        if !defined $uri || @extra;
    return { method => $method, uri => $uri, version => $version, body => $body,
        headers => [lines_of($b->{more_headers})] };
}

sub failures { scalar grep { !$_ } Test::More->builder->summary }

sub describe {
    my ($r) = @_;
    my $head = join "\n", map { "$_->[0]: $_->[1]" } @{ $r->{headers} };
    my $body = length $r->{body} > 600 ? substr($r->{body}, 0, 600) . '...' : $r->{body};
    return "status $r->{status}" . ($r->{error} ? " ($r->{error})" : '') . "\n$head\n\n$body";
}

sub check_header_lines {
    my ($what, $headers, $text, $exactly_one) = @_;
    for my $line (lines_of($text)) {
        if ($line =~ /^!\s*(\S+)\s*$/) {
            my @v = header_values($headers, $1);
            is(scalar @v, 0, "$what: no $1 header") or diag("got: " . join(' | ', @v));
        } elsif ($line =~ /^([^:\s*]+)\*\s*:\s*(\d+)\s*$/) {
            my @v = header_values($headers, $1);
            is(scalar @v, $2, "$what: $1 header $2 time(s)") or diag("got: " . join(' | ', @v));
        } elsif ($line =~ /^([^:\s]+)\s*:[ \t]*(.*?)\s*$/) {
            my ($h, $want) = ($1, $2);
            my @v = header_values($headers, $h);
            if ($exactly_one) {
                is_deeply(\@v, [$want], "$what: $h is '$want'") or diag("got: " . join(' | ', @v));
            } else {
                ok(@v && !grep({ $_ ne $want } @v), "$what: $h is '$want'")
                    or diag(@v ? "got: " . join(' | ', @v) : "no $h header");
            }
        } else {
            die "$what: bad header expectation '$line'\n";
        }
    }
}

sub check_response {
    my ($b, $r, $tag, $status_checked) = @_;
    my $name = "$b->{name}$tag";
    my $before = failures();
    unless ($status_checked) {
        is($r->{status}, $b->{error_code} // 200, "$name: status") or diag(describe($r));
    }
    check_header_lines("$name: response", $r->{headers}, $b->{response_headers}, 0);
    for my $line (lines_of($b->{response_headers_like})) {
        my ($h, $re) = $line =~ /^([^:\s]+)\s*:\s?(.*)$/
            or die "$name: bad response_headers_like line '$line'\n";
        my @v = header_values($r->{headers}, $h);
        ok(@v && !grep({ $_ !~ /$re/ } @v), "$name: response $h like /$re/")
            or diag(@v ? "got: " . join(' | ', @v) : "no $h header");
    }
    is($r->{body}, substitute($b->{response_body}), "$name: response body") if defined $b->{response_body};
    if (defined $b->{response_body_like}) {
        my $re = substitute($b->{response_body_like});
        like($r->{body}, qr/$re/s, "$name: response body like /$re/");
    }
    return failures() == $before;
}

sub send_requests {
    my ($b) = @_;
    my $req = block_request($b);
    my $timeout = $b->{timeout} // 10;
    if (my $n = $b->{concurrent}) {
        my @r = http_requests([($req) x $n], $timeout);
        my $want = $b->{error_code} // 200;
        my %seen;
        $seen{ $_->{status} }++ for @r;
        my $summary = join ', ', map { "$seen{$_} x $_" } sort keys %seen;
        is($summary, "$n x $want", "$b->{name}: all $n concurrent responses have status $want")
            or do {
                my ($bad) = grep { $_->{status} != $want } @r;
                diag("first unexpected response: " . describe($bad)) if $bad;
            };
        for my $i (0 .. $#r) {
            check_response($b, $r[$i], " (concurrent " . ($i + 1) . "/$n)", 1) or last;
        }
        return;
    }
    my $n = $b->{repeat} // 1;
    for my $i (1 .. $n) {
        my $r = http_request($req, $timeout);
        check_response($b, $r, $n > 1 ? " (request $i/$n)" : '') or last;
    }
}

sub check_request_lines {
    my ($what, $req, $text) = @_;
    for my $line (lines_of($text)) {
        if ($line =~ /^method:\s*(.*?)\s*$/) {
            is($req->{method}, $1, "$what: method");
        } elsif ($line =~ /^path:\s*(.*?)\s*$/) {
            is($req->{path}, $1, "$what: path");
        } elsif ($line =~ /^body:\s?(.*)$/) {
            is($req->{body}, $1, "$what: body");
        } elsif ($line =~ /^body_like:\s*(.*)$/) {
            like($req->{body}, qr/$1/s, "$what: body like /$1/");
        } elsif ($line =~ /^(!?)header\s+(.*)$/) {
            check_header_lines($what, $req->{headers}, "$1$2", 1);
        } else {
            die "$what: bad line '$line' (method:, path:, header N: v, header N*: n, !header N,"
                . " body:, body_like:)\n";
        }
    }
}

sub check_upstreams {
    my ($b) = @_;
    my $name = $b->{name};
    my $idp = idp_requests();
    my $backend = backend_requests();
    is(scalar @$idp, $b->{idp_calls}, "$name: IdP calls") if defined $b->{idp_calls};
    is(scalar @$backend, $b->{backend_calls}, "$name: backend calls") if defined $b->{backend_calls};
    if (defined $b->{idp_request}) {
        if (ok(@$idp, "$name: the IdP got a request")) {
            check_request_lines("$name: IdP request", $idp->[-1], $b->{idp_request});
        }
    }
    if (grep { defined $b->{$_} } qw(backend_request backend_headers backend_uri)) {
        if (ok(@$backend, "$name: the backend got a request")) {
            my $last = $backend->[-1];
            is($last->{path}, substitute($b->{backend_uri}), "$name: backend URI") if defined $b->{backend_uri};
            check_header_lines("$name: backend request", $last->{headers}, $b->{backend_headers}, 1);
            check_request_lines("$name: backend request", $last, $b->{backend_request});
        }
    }
}

sub log_matches {
    my ($text, $pattern) = @_;
    return $pattern =~ m{^/(.*)/$} ? scalar($text =~ /$1/m) : index($text, $pattern) >= 0;
}

sub check_logs {
    my ($b, $text_of, $wait) = @_;
    my $deadline = time + ($wait ? $LOG_WAIT : 0);
    my @want = lines_of($b->{error_log});
    my @counts = map {
        /^(.*?):\s*(\d+)\s*$/ or die "$b->{name}: error_log_count wants 'text: N', got '$_'\n";
        [$1, $2]
    } lines_of($b->{error_log_count});
    my $count = sub {
        my ($what, $text) = @_;
        return scalar grep { log_matches($_, $what) } split /\n/, $text;
    };
    my $text = $text_of->();
    while (time < $deadline) {
        last unless grep({ !log_matches($text, $_) } @want)
            || grep({ $count->($_->[0], $text) < $_->[1] } @counts);
        sleep 0.02;
        $text = $text_of->();
    }
    ok(log_matches($text, $_), "$b->{name}: error log has '$_'") for @want;
    ok(!log_matches($text, $_), "$b->{name}: error log lacks '$_'") for lines_of($b->{no_error_log});
    is($count->($_->[0], $text), $_->[1], "$b->{name}: error log has '$_->[0]' $_->[1] time(s)") for @counts;
}

sub diag_log {
    my ($text) = @_;
    my @serious = grep { /\[(?:warn|error|crit|alert|emerg)\]/ } split /\n/, $text;
    splice @serious, 10 if @serious > 10;
    diag("error.log, warn and above (first 10):\n" . join("\n", @serious)) if @serious;
    diag("error.log, last 30 lines:\n" . log_tail(30, $text));
}

sub run_must_die {
    my ($b) = @_;
    write_files($b);
    my ($rc, $out) = run_command(nginx_argv('-t'));
    isnt($rc, 0, "$b->{name}: nginx -t fails");
    check_logs($b, sub { $out }, 0);
    return $out;
}

sub run_live {
    my ($b) = @_;
    idp_setup(defined $b->{idp} ? $JSON->decode(substitute($b->{idp})) : {});
    start_nginx($b) or return;
    send_requests($b) if defined $b->{request};
    check_upstreams($b);
    check_logs($b, \&error_log_text, 1);
}

sub run_block {
    my ($b) = @_;
    if (defined $b->{skip_reason}) {
        SKIP: { skip("$b->{name}: $b->{skip_reason}", 1) }
        return;
    }
    my $before = failures();
    my $out;
    my $ran = eval {
        if (exists $b->{must_die}) { $out = run_must_die($b) } else { run_live($b) }
        1;
    };
    my $error = $@;
    fail("$b->{name}: harness error: $error") unless $ran;
    if (failures() > $before) {
        if (exists $b->{must_die}) { diag("nginx -t said:\n" . ($out // '')) }
        else { diag_log(error_log_text()) }
    }
    stop_nginx();
}

sub run_tests {
    my (%opt) = @_;
    my $pkg = caller;
    my $data = do { no strict 'refs'; my $fh = \*{"${pkg}::DATA"}; local $/; <$fh> };
    die "run_tests: no __DATA__ section with test blocks\n" unless defined $data;
    my @blocks = parse_blocks($data, "$0 __DATA__");
    die "run_tests: no '=== ' blocks after __DATA__\n" unless @blocks;
    start_servers();
    for my $b (@blocks) {
        $b->{config}      //= $opt{default_config};
        $b->{http_config} //= $opt{default_http_config};
        run_block($b);
    }
    done_testing();
}

1;
