package OIDCProvider;

=pod

=head1 NAME

OIDCProvider - a real OAuth 2.0 server (npm oidc-provider) for interop tests

=head1 SYNOPSIS

    use lib 't/lib';
    use OAuth2Test;
    use OIDCProvider;
    require_oidc_provider();                # skip_all (or fail) with the reason
    my $op = start_oidc_provider();
    my $token = oidc_token();               # an active access token, sub "alice"
    # nginx: proxy_pass $op->{introspection_endpoint};
    #        proxy_ssl_trusted_certificate $op->{ca}; ...
    my @calls = oidc_log();                 # what the provider received

=head1 DESCRIPTION

Starts F<t/oidc/provider.mjs> (oidc-provider at the exact version of
F<t/oidc/package-lock.json>) with Node.js on a free loopback port, over HTTPS,
with keys and certificates this module makes with the C<openssl> command.
Perl core modules only. The provider is stopped at exit (TERM, then KILL).

=head2 What it needs

C<node> (20 or later; oidc-provider 9 prints "Unsupported runtime" below 22
and works), C<openssl>, and the npm dependencies in F<t/oidc/node_modules>:
when they are missing or not those of the lockfile, C<npm ci> runs there
(once at a time across test files: a lock file), which needs C<npm> and the
npm registry. C<oidc_provider_unavailable()> tells what is missing;
C<require_oidc_provider()> turns that into C<plan skip_all> with the reason,
or, with C<TEST_OIDC_REQUIRED=1> in the environment (for CI), into a failed
test. C<TEST_OIDC_NODE> / C<TEST_OIDC_NPM> name other binaries.

=head2 start_oidc_provider(%opts)

Options: C<sub> (the C<sub> of client_credentials tokens, default C<alice>),
C<token_ttl> (seconds, default 600), C<jwt_resource> (a resource indicator:
a token asked for it with C<token(resource =E<gt> ...)> is a JWT access token,
RFC 9068, signed with the provider's ES256 key at its C</jwks>), C<dir> (where keys, certificates, logs
go; default a temporary directory, kept with C<TEST_NGINX_KEEP=1>),
C<signing_keys_file> (the provider's private signing keys as a JWK Set: made
on first start, read on the next; with C<new_signing_kid>, a new key of that
C<kid> is put first and signs from then on, the old ones staying in its
JWK Set: a key rotation across a restart with the same C<port>),
C<timeout> (seconds to wait for readiness, default 20). C<< $op->restart(%opts) >>
stops it and starts it again on the same port with the same certificates and
keys, its options overridden by C<%opts>. Dies with the
provider's output when it does not come up. Returns an object (a hashref):

  port, issuer                 https://127.0.0.1:PORT
  token_endpoint               ISSUER/token
  introspection_endpoint       ISSUER/token/introspection
  version, node                oidc-provider and Node.js versions
  dir, log_file, pid
  ca                           the test CA certificate (PEM): it signed the
                               server certificate (IP 127.0.0.1, DNS localhost)
                               and the tls_client_auth client certificates
  server_cert, server_key
  clients                      client_id => {client_id, method, client_secret}
  client_for                   method => client_id, for client_secret_basic,
                               client_secret_post, client_secret_jwt,
                               private_key_jwt, tls_client_auth,
                               self_signed_tls_client_auth; and
                               client_credentials => token-issuer
  keys                         rsa, ec, ed25519 => {private (PEM path), public
                               (PEM path), jwk (public JWK hashref with kid),
                               kid}: the private_key_jwt client's keys
  jwks_file                    the public JWK set the provider was given
  tls_client                   {cert, key, dn}: CA-signed, the subject DN the
                               tls_client_auth client is registered with
  other_tls_client             {cert, key, dn}: CA-signed, another DN
  self_signed_client           {cert, key}: in the self_signed client's x5c
  unknown_self_signed          {cert, key}: a self-signed cert nobody registered
  unregistered_key             an EC P-256 private key (PEM) in no client's JWKS

Methods (and exported functions on the provider started last):

  token(%o)        oidc_token(%o): an active access token from a
                   client_credentials grant of token-issuer (scope =>
                   'orders:read' by default; "" asks for none; resource =>
                   the jwt_resource: a JWT access token)
  tokens($n, %o)   oidc_tokens($n, %o): $n of them (one node process)
  inactive_token() oidc_inactive_token(): a token issued, then revoked
                   (the provider knows it and says active: false)
  inactive_tokens($n)  oidc_inactive_tokens($n): $n of them
  log()            oidc_log(): the provider's records of token and
                   introspection requests, oldest first (hashrefs: seq,
                   route, path, host, status, presented_auth, client_id,
                   auth_method, client_authenticated, error,
                   error_description, error_detail, jti, assertion{alg, kid,
                   iss, sub, aud, jti, iat, exp}, assertion_replayed,
                   tls_client_cert{subject, authorized, x5t#S256}, grant_type,
                   audience, scope, active, ...); log(since => SEQ)
  log_clear()      oidc_log_clear(): forget them
  request(@reqs)   oidc_request(@reqs): HTTPS requests to the provider (through
                   node; the server certificate is verified against the CA).
                   A request: {method, path or url, form => [k => v, ...]
                   (form-urlencoded body), body, headers => [[n, v], ...],
                   basic => [id, secret] (RFC 6749 2.3.1 encoded), cert, key
                   (a TLS client certificate)}. Returns, for each, {status,
                   headers (lower-case names), body, json (decoded when JSON),
                   error}; in scalar context the first.
  client_assertion(%o)
                   oidc_client_assertion(%o): a signed client assertion JWT
                   (RFC 7523): alg (HS256, RS256, PS256, ES256, EdDSA,
                   Ed25519; default RS256), client_id (default the
                   private_key_jwt client, or the client_secret_jwt client for
                   HS*), key (rsa, ec, ed25519; default by alg) or key_file
                   (a PEM private key), secret (HS*;
                   default that client's), aud (default the issuer), jti
                   (default random), iat, exp (default iat + 60), nbf, kid
                   (default the key's; undef leaves it out), claims => {...}
                   (added; an undef value removes a claim), header => {...}
  stop()           TERM, then KILL after 3 s

Helpers: C<form_encode(@pairs)>, C<basic_credentials($id, $secret)> (the
value after "Basic "), C<b64url($bytes)>, C<decode_jwt($jwt)> (header and
payload hashrefs, unverified).

=cut

use strict;
use warnings;
use Exporter 'import';
use Test::More ();
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use File::Basename qw(dirname);
use File::Spec;
use Cwd qw(abs_path);
use Fcntl qw(:flock);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use MIME::Base64 qw(encode_base64 decode_base64);
use Digest::SHA qw(sha256 hmac_sha256 hmac_sha384 hmac_sha512);
use JSON::PP;

our @EXPORT = qw(oidc_provider_unavailable require_oidc_provider start_oidc_provider
  oidc_token oidc_tokens oidc_inactive_token oidc_inactive_tokens oidc_log oidc_log_clear oidc_request oidc_client_assertion);
our @EXPORT_OK = qw(form_encode basic_credentials b64url decode_jwt);

my $ROOT  = abs_path(dirname(__FILE__) . '/../..');
my $OIDC  = "$ROOT/t/oidc";
my $NODE  = $ENV{TEST_OIDC_NODE} || 'node';
my $NPM   = $ENV{TEST_OIDC_NPM}  || 'npm';
my $JSON  = JSON::PP->new->canonical->allow_nonref;
my $OWNER = $$;
my @STARTED;    # providers to stop at exit
my $CURRENT;    # the provider the oidc_* functions use
my $UNAVAILABLE;

# ---- prerequisites -------------------------------------------------------------

sub which {
    my ($cmd) = @_;
    return -x $cmd ? $cmd : undef if $cmd =~ m{/};
    for my $dir (split /:/, $ENV{PATH} // '') {
        return "$dir/$cmd" if length $dir && -f "$dir/$cmd" && -x _;
    }
    return undef;
}

# (exit status, stdout+stderr) of a command, run without a shell.
sub run {
    my (@argv) = @_;
    my $opts = ref $argv[0] eq 'HASH' ? shift @argv : {};
    my $pid = open(my $out, '-|');
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        $SIG{PIPE} = 'DEFAULT';
        chdir $opts->{dir} or POSIX::_exit(126) if $opts->{dir};
        if (defined $opts->{stdin}) {
            open STDIN, '<', $opts->{stdin} or POSIX::_exit(126);
        } else {
            open STDIN, '<', '/dev/null';
        }
        open STDERR, '>&', \*STDOUT unless $opts->{stderr_apart};
        exec @argv or POSIX::_exit(127);
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    return ($?, $text);
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    binmode $fh;
    local $/;
    return scalar <$fh>;
}

sub spew {
    my ($file, $text) = @_;
    make_path(dirname($file));
    open my $fh, '>', $file or die "cannot write $file: $!\n";
    binmode $fh;
    print $fh $text;
    close $fh or die "cannot write $file: $!\n";
}

sub tail_lines {
    my ($text, $n) = @_;
    my @l = split /\n/, $text // '';
    return join "\n", @l > $n ? @l[-$n .. -1] : @l;
}

# The version of a package in the lockfile and in node_modules, or why not.
sub deps_installed {
    my $lock = eval { $JSON->decode(slurp("$OIDC/package-lock.json") // die "no t/oidc/package-lock.json\n") };
    return (0, "t/oidc/package-lock.json: " . ($@ =~ s/\s+$//r)) unless $lock;
    my @pkgs = sort grep { m{^node_modules/} } keys %{ $lock->{packages} // {} };
    for my $pkg ((grep { $_ eq 'node_modules/oidc-provider' } @pkgs), @pkgs) {
        my $want = $lock->{packages}{$pkg}{version} // next;
        next if $lock->{packages}{$pkg}{optional} || $lock->{packages}{$pkg}{dev};
        my $have = eval { $JSON->decode(slurp("$OIDC/$pkg/package.json") // die "\n")->{version} };
        return (0, "$pkg " . ($have ? "is $have, the lockfile wants $want" : 'is missing'))
            unless defined $have && $have eq $want;
    }
    return (1, '');
}

sub install_deps {
    my ($ok, $why) = deps_installed();
    return '' if $ok;
    my $npm = which($NPM) or return "npm not found ($NPM), needed to install t/oidc's packages ($why)";
    # One `npm ci` at a time (prove -j runs test files in parallel).
    my $lockfile = File::Spec->catfile(File::Spec->tmpdir, 'oauth2-test-oidc-npm-ci.lock');
    open my $lock, '>>', $lockfile or return "cannot open $lockfile: $!";
    flock($lock, LOCK_EX) or return "cannot lock $lockfile: $!";
    ($ok) = deps_installed();    # another test file may have installed them meanwhile
    return '' if $ok;
    Test::More::note("t/oidc: $why; running npm ci");
    my ($rc, $out) = run({ dir => $OIDC }, $npm, 'ci', '--no-audit', '--no-fund', '--loglevel=error');
    close $lock;
    return "`npm ci` in t/oidc failed (exit " . ($rc >> 8) . "):\n" . tail_lines($out, 20) if $rc;
    ($ok, $why) = deps_installed();
    return "`npm ci` in t/oidc succeeded but $why" unless $ok;
    return '';
}

=head2 oidc_provider_unavailable()

Empty when the provider can run here; otherwise why not (node, openssl, the
npm dependencies). Runs C<npm ci> when needed. The answer is remembered.

=cut

sub oidc_provider_unavailable {
    return $UNAVAILABLE if defined $UNAVAILABLE;
    $UNAVAILABLE = sub {
        my $node = which($NODE) or return "node (Node.js 20 or later) not found ($NODE)";
        my ($rc, $v) = run($node, '--version');
        return "`$node --version` failed: $v" if $rc;
        my ($major) = $v =~ /^v(\d+)\./ or return "`$node --version` said '$v'";
        return "Node.js $major is too old for oidc-provider 9 (20 or later)" if $major < 20;
        which('openssl') or return 'the openssl command was not found';
        return install_deps();
    }->();
    return $UNAVAILABLE;
}

=head2 require_oidc_provider()

C<plan skip_all> with the reason when the provider cannot run here, or, with
C<TEST_OIDC_REQUIRED=1>, one failed test and exit: never a silent pass.

=cut

sub require_oidc_provider {
    my $why = oidc_provider_unavailable() or return 1;
    if ($ENV{TEST_OIDC_REQUIRED}) {
        Test::More::plan(tests => 1);
        Test::More::fail("oidc-provider test harness (TEST_OIDC_REQUIRED is set)");
        Test::More::diag("oidc-provider unavailable: $why");
        exit 1;
    }
    (my $line = $why) =~ s/\s*\n\s*/ | /g;    # a TAP skip reason is one line
    Test::More::plan(skip_all => "oidc-provider unavailable: $line");
}

# ---- keys and certificates -----------------------------------------------------

sub openssl {
    my (@args) = @_;
    my ($rc, $out) = run('openssl', @args);
    die "openssl @args failed:\n$out\n" if $rc;
    return $out;
}

sub b64url {
    my $s = encode_base64($_[0], '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

sub b64url_decode {
    my $s = $_[0] =~ tr{-_}{+/}r;
    $s .= '=' x ((4 - length($s) % 4) % 4);
    return decode_base64($s);
}

# DER: (tag, content, rest) of the first element of $der.
sub der_next {
    my ($der) = @_;
    die "truncated DER\n" if length $der < 2;
    my ($tag, $len) = unpack 'CC', $der;
    my $off = 2;
    if ($len & 0x80) {
        my $n = $len & 0x7f;
        $len = 0;
        $len = $len * 256 + ord(substr($der, $off++, 1)) for 1 .. $n;
    }
    die "truncated DER\n" if length($der) < $off + $len;
    return ($tag, substr($der, $off, $len), substr($der, $off + $len));
}

sub der_children {
    my ($content) = @_;
    my @out;
    while (length $content) {
        my ($tag, $c, $rest) = der_next($content);
        push @out, [$tag, $c];
        $content = $rest;
    }
    return @out;
}

sub strip_int { my $x = $_[0]; $x =~ s/^\x00+(?=.)//s; return $x }

# The public JWK of a private key file: RSA, EC P-256 or Ed25519.
sub public_jwk {
    my ($pem, $type) = @_;
    my $der = openssl('pkey', '-in', $pem, '-pubout', '-outform', 'DER');
    my ($tag, $spki) = der_next($der);
    my ($alg, $bits) = der_children($spki);
    my $key = substr($bits->[1], 1);    # a BIT STRING: skip the unused-bits byte
    my %jwk;
    if ($type eq 'rsa') {
        my (undef, $rsa) = der_next($key);    # RSAPublicKey: SEQUENCE { n, e }
        my ($n, $e) = der_children($rsa);
        %jwk = (kty => 'RSA', n => b64url(strip_int($n->[1])), e => b64url(strip_int($e->[1])));
    } elsif ($type eq 'ec') {
        die "not an uncompressed P-256 point\n" unless length $key == 65 && substr($key, 0, 1) eq "\x04";
        %jwk = (kty => 'EC', crv => 'P-256', x => b64url(substr($key, 1, 32)), y => b64url(substr($key, 33, 32)));
    } elsif ($type eq 'ed25519') {
        die "not an Ed25519 key\n" unless length $key == 32;
        %jwk = (kty => 'OKP', crv => 'Ed25519', x => b64url($key));
    }
    # RFC 7638 thumbprint as kid: the required members, sorted, no spaces.
    my @req = $jwk{kty} eq 'RSA' ? qw(e kty n) : $jwk{kty} eq 'EC' ? qw(crv kty x y) : qw(crv kty x);
    my $canon = '{' . join(',', map { "\"$_\":\"$jwk{$_}\"" } @req) . '}';
    $jwk{kid} = b64url(sha256($canon));
    $jwk{use} = 'sig';
    return \%jwk;
}

sub make_keys {
    my ($dir) = @_;
    my $cnf = "$dir/openssl.cnf";
    spew($cnf, <<'CNF');
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
CNF
    my @ec = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes');
    my %k;
    # The CA, the server certificate, client certificates (EC P-256 keys).
    openssl('req', '-x509', @ec, '-keyout', "$dir/ca.key", '-out', "$dir/ca.crt", '-days', '7',
        '-subj', '/O=oauth2-test/CN=oauth2-test CA', '-config', $cnf, '-extensions', 'ca_ext');
    my $serial = 1000;
    my $signed = sub {
        my ($name, $subj, $ext) = @_;
        openssl('req', '-new', @ec, '-keyout', "$dir/$name.key", '-out', "$dir/$name.csr",
            '-subj', $subj, '-config', $cnf);
        openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key",
            '-set_serial', $serial++, '-days', '7', '-extfile', $cnf, '-extensions', $ext,
            '-out', "$dir/$name.crt");
        return { cert => "$dir/$name.crt", key => "$dir/$name.key" };
    };
    my $self_signed = sub {
        my ($name, $subj) = @_;
        openssl('req', '-x509', @ec, '-keyout', "$dir/$name.key", '-out', "$dir/$name.crt", '-days', '7',
            '-subj', $subj, '-config', $cnf, '-extensions', 'client_ext');
        return { cert => "$dir/$name.crt", key => "$dir/$name.key" };
    };
    my $server = $signed->('server', '/CN=127.0.0.1', 'server_ext');
    $k{server_cert} = $server->{cert};
    $k{server_key} = $server->{key};
    $k{tls_client} = { %{ $signed->('client-tls', '/O=oauth2-test/CN=gw-tls', 'client_ext') },
        dn => 'CN=gw-tls,O=oauth2-test' };
    $k{other_tls_client} = { %{ $signed->('client-other', '/O=oauth2-test/CN=someone-else', 'client_ext') },
        dn => 'CN=someone-else,O=oauth2-test' };
    $k{self_signed_client} = $self_signed->('client-self-signed', '/CN=gw-self-signed-tls');
    $k{unknown_self_signed} = $self_signed->('client-unknown', '/CN=gw-self-signed-tls');
    $k{ca} = "$dir/ca.crt";
    # A key no client registered.
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$dir/unregistered-ec.pem");
    $k{unregistered_key} = "$dir/unregistered-ec.pem";
    # The private_key_jwt client's keys.
    openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', "$dir/pkjwt-rsa.pem");
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$dir/pkjwt-ec.pem");
    openssl('genpkey', '-algorithm', 'ED25519', '-out', "$dir/pkjwt-ed25519.pem");
    my @jwks;
    for my $type (qw(rsa ec ed25519)) {
        my $private = "$dir/pkjwt-$type.pem";
        openssl('pkey', '-in', $private, '-pubout', '-out', "$dir/pkjwt-$type.pub.pem");
        my $jwk = public_jwk($private, $type);
        $k{keys}{$type} = { private => $private, public => "$dir/pkjwt-$type.pub.pem", jwk => $jwk,
            kid => $jwk->{kid} };
        push @jwks, $jwk;
    }
    $k{jwks_file} = "$dir/pkjwt-jwks.json";
    spew($k{jwks_file}, $JSON->encode({ keys => \@jwks }));
    return \%k;
}

# ---- the provider ----------------------------------------------------------------

=head2 start_oidc_provider(%opts)

See above. Dies when the provider cannot run or does not come up.

=cut

sub start_oidc_provider {
    my (%o) = @_;
    if (my $why = oidc_provider_unavailable()) {
        die "oidc-provider unavailable: $why\n";
    }
    my $dir = $o{dir} // tempdir('oauth2-oidc-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_KEEP});
    make_path($dir);
    Test::More::diag("TEST_NGINX_KEEP: the oidc-provider files are in $dir") if $ENV{TEST_NGINX_KEEP};
    # A restart keeps the certificates and keys: the gateway trusts them.
    my $made = $o{reuse} ? $o{reuse}{made_keys} : make_keys($dir);
    my %options = %o;
    delete @options{qw(reuse dir port)};
    my $self = bless { dir => $dir, made_keys => $made, options => \%options, %$made }, __PACKAGE__;
    $self->{log_file} = "$dir/provider-requests.jsonl";
    my $ready = "$dir/provider.ready.json";
    my $out = "$dir/provider.log";
    unlink $ready, $self->{log_file};
    my %env = (
        OIDC_PORT             => $o{port} // 0,
        OIDC_TLS_KEY          => $self->{server_key},
        OIDC_TLS_CERT         => $self->{server_cert},
        OIDC_TLS_CA           => $self->{ca},
        OIDC_PKJWT_JWKS       => $self->{jwks_file},
        OIDC_SELF_SIGNED_CERT => $self->{self_signed_client}{cert},
        OIDC_TLS_CLIENT_DN    => $self->{tls_client}{dn},
        OIDC_TOKEN_SUB        => $o{sub} // 'alice',
        OIDC_TOKEN_TTL        => $o{token_ttl} // 600,
        OIDC_JWT_RESOURCE     => $o{jwt_resource} // '',
        OIDC_SIGNING_KEYS_FILE => $o{signing_keys_file} // '',
        OIDC_NEW_SIGNING_KID  => $o{new_signing_kid} // '',
        OIDC_LOG_FILE         => $self->{log_file},
        OIDC_READY_FILE       => $ready,
    );
    my $node = which($NODE);
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        $SIG{PIPE} = 'DEFAULT';
        @ENV{ keys %env } = values %env;
        chdir $OIDC or POSIX::_exit(126);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $out;
        open STDERR, '>&', \*STDOUT;
        exec $node, "$OIDC/provider.mjs" or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    push @STARTED, $self;
    my $timeout = $o{timeout} // 20;
    my $deadline = time + $timeout;
    my $info;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pid};
            die "oidc-provider exited (status " . ($? >> 8) . ") before it was ready:\n"
                . tail_lines(slurp($out), 30) . "\n";
        }
        if (-e $ready) {
            $info = eval { $JSON->decode(slurp($ready)) } and last;
        }
        sleep 0.05;
    }
    unless ($info) {
        $self->stop;
        die "oidc-provider not ready after ${timeout}s:\n" . tail_lines(slurp($out), 30) . "\n";
    }
    @$self{qw(port issuer version node token_sub)} = @$info{qw(port issuer oidc_provider node token_sub)};
    $self->{token_endpoint} = $info->{endpoints}{token};
    $self->{introspection_endpoint} = $info->{endpoints}{introspection};
    $self->{output} = $out;
    for my $c (@{ $info->{clients} }) {
        $self->{clients}{ $c->{client_id} } = $c;
        my $key = grep({ $_ eq 'client_credentials' } @{ $c->{grant_types} }) ? 'client_credentials' : $c->{method};
        $self->{client_for}{$key} = $c->{client_id};
    }
    $CURRENT = $self;
    return $self;
}

# Stops the provider and starts it again on the same port (the same issuer)
# with the same certificates, its options overridden by %o.
sub restart {
    my ($self, %o) = @_;
    $self->stop;
    return start_oidc_provider(%{ $self->{options} }, %o,
        dir => $self->{dir}, port => $self->{port}, reuse => $self);
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    my $deadline = time + 3;
    while (time < $deadline) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

END {
    my $rc = $?;
    if (defined $OWNER && $$ == $OWNER) {
        $_->stop for @STARTED;
    }
    $? = $rc;
}

# ---- talking to it ------------------------------------------------------------------

sub form_encode {
    my (@pairs) = @_;
    my @out;
    while (my ($k, $v) = splice @pairs, 0, 2) {
        push @out, join '=', map { my $s = $_ // ''; $s =~ s/([^A-Za-z0-9\-._~ ])/sprintf '%%%02X', ord $1/ge;
            $s =~ tr/ /+/; $s } $k, $v;
    }
    return join '&', @out;
}

# RFC 6749 2.3.1: id and secret form-urlencoded, joined by ':', base64.
sub basic_credentials {
    my ($id, $secret) = @_;
    my $enc = sub { my $s = form_encode(x => $_[0]); $s =~ s/^x=//; $s };
    return encode_base64($enc->($id) . ':' . $enc->($secret), '');
}

sub request {
    my ($self, @reqs) = @_;
    my @json;
    for my $r (@reqs) {
        my @headers = @{ $r->{headers} // [] };
        my $body = $r->{body};
        if ($r->{form}) {
            $body = form_encode(@{ $r->{form} });
            push @headers, ['content-type', 'application/x-www-form-urlencoded'];
        }
        push @headers, ['authorization', 'Basic ' . basic_credentials(@{ $r->{basic} })] if $r->{basic};
        push @headers, ['accept', 'application/json'] unless grep { lc $_->[0] eq 'accept' } @headers;
        push @json, {
            method => $r->{method} // (defined $body ? 'POST' : 'GET'),
            url => $r->{url} // $self->{issuer} . ($r->{path} // '/'),
            headers => \@headers,
            (defined $body ? (body => $body) : ()),
            ca => $self->{ca},
            ($r->{cert} ? (cert => $r->{cert}, key => $r->{key}) : ()),
        };
    }
    my $in = "$self->{dir}/request.$$." . int(rand(1e9)) . '.json';
    spew($in, $JSON->encode(\@json));
    my ($rc, $out) = run({ stdin => $in, dir => $OIDC, stderr_apart => 1 }, which($NODE), "$OIDC/request.mjs");
    unlink $in;
    my $res = eval { $JSON->decode($out) };
    die "t/oidc/request.mjs failed (exit " . ($rc >> 8) . "): $out\n" unless $res && ref $res eq 'ARRAY';
    for my $r (@$res) {
        my $ct = $r->{headers}{'content-type'} // '';
        $r->{json} = eval { $JSON->decode($r->{body}) } if $ct =~ m{json};
    }
    return wantarray ? @$res : $res->[0];
}

sub token {
    my ($self, %o) = @_;
    return ($self->tokens(1, %o))[0];
}

# $n active tokens at once (one node process).
sub tokens {
    my ($self, $n, %o) = @_;
    my $id = $self->{client_for}{client_credentials};
    my $scope = exists $o{scope} ? $o{scope} : 'orders:read';
    my @r = $self->request(map { { path => '/token', basic => [$id, $self->{clients}{$id}{client_secret}],
        form => [grant_type => 'client_credentials', (length($scope // '') ? (scope => $scope) : ()),
            ($o{resource} ? (resource => $o{resource}) : ())] } } 1 .. $n);
    return map {
        die "client_credentials grant failed: " . ($_->{error} // "$_->{status} $_->{body}") . "\n"
            unless ($_->{status} // 0) == 200 && $_->{json} && $_->{json}{access_token};
        $_->{json}{access_token}
    } @r;
}

sub inactive_token { ($_[0]->inactive_tokens(1))[0] }

# $n tokens issued, then revoked (two node processes).
sub inactive_tokens {
    my ($self, $n) = @_;
    my @tokens = $self->tokens($n);
    for my $r ($self->request(map { { path => '/__test/revoke', form => [token => $_] } } @tokens)) {
        die "revoking a token failed: " . ($r->{error} // "$r->{status} $r->{body}") . "\n"
            unless ($r->{status} // 0) == 200 && $r->{json} && $r->{json}{revoked};
    }
    return @tokens;
}

sub log {
    my ($self, %o) = @_;
    my $text = slurp($self->{log_file}) // '';
    my @entries = map { $JSON->decode($_) } grep { /\S/ } split /\n/, $text;
    @entries = grep { $_->{seq} > $o{since} } @entries if $o{since};
    @entries = grep { $_->{seq} > $self->{log_cleared_at} } @entries if $self->{log_cleared_at};
    return @entries;
}

sub log_clear {
    my ($self) = @_;
    my @all = $self->log;
    $self->{log_cleared_at} = @all ? $all[-1]{seq} : ($self->{log_cleared_at} // 0);
    return scalar @all;
}

# ---- client assertions (RFC 7523) ---------------------------------------------------

sub random_id { b64url(join '', map { chr int rand 256 } 1 .. 18) . sprintf('-%x', time * 1000) }

sub decode_jwt {
    my ($jwt) = @_;
    my ($h, $p) = split /\./, $jwt // '';
    return (eval { $JSON->decode(b64url_decode($h)) }, eval { $JSON->decode(b64url_decode($p)) });
}

sub sign_with_openssl {
    my ($self, $alg, $key, $input) = @_;
    my $in = "$self->{dir}/sign.$$.in";
    my $sig = "$self->{dir}/sign.$$.sig";
    spew($in, $input);
    if ($alg eq 'EdDSA' || $alg eq 'Ed25519') {
        openssl('pkeyutl', '-sign', '-inkey', $key, '-rawin', '-in', $in, '-out', $sig);
    } elsif ($alg eq 'PS256') {
        openssl('dgst', '-sha256', '-sign', $key, '-sigopt', 'rsa_padding_mode:pss',
            '-sigopt', 'rsa_pss_saltlen:32', '-out', $sig, $in);
    } else {
        openssl('dgst', '-sha256', '-sign', $key, '-out', $sig, $in);
    }
    my $s = slurp($sig);
    unlink $in, $sig;
    if ($alg eq 'ES256') {    # DER ECDSA-Sig-Value -> r || s, 32 bytes each
        my ($tag, $seq) = der_next($s);
        my ($r, $ss) = der_children($seq);
        $s = join '', map { my $x = strip_int($_->[1]); ("\x00" x (32 - length $x)) . $x } $r, $ss;
    }
    return $s;
}

sub client_assertion {
    my ($self, %o) = @_;
    my $alg = $o{alg} // 'RS256';
    my $hs = $alg =~ /^HS/;
    my $client_id = $o{client_id} // $self->{client_for}{ $hs ? 'client_secret_jwt' : 'private_key_jwt' };
    my $type = $o{key} // ($alg =~ /^(?:RS|PS)/ ? 'rsa' : $alg eq 'ES256' ? 'ec' : 'ed25519');
    my $key_file = $o{key_file} // $self->{keys}{$type}{private};
    my $now = time;
    my %claims = (
        iss => $client_id,
        sub => $client_id,
        aud => $o{aud} // $self->{issuer},
        jti => $o{jti} // random_id(),
        iat => int($o{iat} // $now),
        exp => int($o{exp} // ($o{iat} // $now) + 60),
        (defined $o{nbf} ? (nbf => int $o{nbf}) : ()),
    );
    while (my ($k, $v) = each %{ $o{claims} // {} }) {
        if (defined $v) { $claims{$k} = $v } else { delete $claims{$k} }
    }
    my %header = (alg => $alg, typ => 'JWT');
    my $kid = exists $o{kid} ? $o{kid} : $hs ? undef : $self->{keys}{$type}{kid};
    $header{kid} = $kid if defined $kid;
    while (my ($k, $v) = each %{ $o{header} // {} }) {
        if (defined $v) { $header{$k} = $v } else { delete $header{$k} }
    }
    my $input = b64url($JSON->encode(\%header)) . '.' . b64url($JSON->encode(\%claims));
    my $sig;
    if ($hs) {
        my $secret = $o{secret} // $self->{clients}{$client_id}{client_secret} // '';
        my %mac = (HS256 => \&hmac_sha256, HS384 => \&hmac_sha384, HS512 => \&hmac_sha512);
        my $f = $mac{$alg} or die "unsupported alg $alg\n";
        $sig = $f->($input, $secret);
    } else {
        $sig = $self->sign_with_openssl($alg, $key_file, $input);
    }
    return "$input." . b64url($sig);
}

# ---- the provider started last ----------------------------------------------------------

sub current { $CURRENT or die "no oidc-provider started (start_oidc_provider)\n" }
sub oidc_token            { current()->token(@_) }
sub oidc_tokens           { current()->tokens(@_) }
sub oidc_inactive_token   { current()->inactive_token(@_) }
sub oidc_inactive_tokens  { current()->inactive_tokens(@_) }
sub oidc_log              { current()->log(@_) }
sub oidc_log_clear        { current()->log_clear(@_) }
sub oidc_request          { current()->request(@_) }
sub oidc_client_assertion { current()->client_assertion(@_) }

1;
