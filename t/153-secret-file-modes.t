# Files of secrets (issue 22 item 13): the client secret, private_key_jwt's
# key, the fleet keys and the Redis password are read when the configuration
# loads; one that users other than its owner may read (or write) is still
# read, with an `nginx -t` warning that names the directive (and parameter)
# and the file, never what the file holds. 0600 and 0400 files get none.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use Cwd qw(abs_path);

my $NGINX = abs_path($ENV{TEST_NGINX_BINARY} || 'objs/nginx');
my $MODULE = abs_path($ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so');

my $CLIENT_SECRET = 'client-secret-Zq81';
my $FLEET = 'fleet-secret-0123456789abcdef-0123456789';
my $OLD = 'old-fleet-secret-0123456789abcdef-012345';
my $PASSWORD = 'redis-password-Pw55';

# nginx -t of a configuration whose secret files have the given modes;
# returns (exit code, output).
sub nginx_t {
    my (%mode) = @_;
    my $dir = tempdir(CLEANUP => 1);
    mkdir "$dir/logs";
    my ($rc, $out) = OAuth2Test::run_command('openssl', 'genpkey', '-algorithm', 'ed25519',
        '-out', "$dir/client.pem");
    die "openssl genpkey: $out" if $rc;
    my $key_pem = OAuth2Test::slurp("$dir/client.pem");
    OAuth2Test::spew("$dir/client.secret", "$CLIENT_SECRET\n");
    OAuth2Test::spew("$dir/fleet.key", "$FLEET\n");
    OAuth2Test::spew("$dir/old.key", "$OLD\n");
    OAuth2Test::spew("$dir/redis.pw", "$PASSWORD\n");
    for my $f (qw(client.secret client.pem fleet.key old.key redis.pw)) {
        chmod($mode{$f} // 0600, "$dir/$f") or die "chmod $f: $!";
    }
    OAuth2Test::spew("$dir/nginx.conf", <<CONF);
load_module $MODULE;
error_log logs/error.log;
events {}
http {
    upstream idp { server 127.0.0.1:1; }
    auth_oauth2_token_redis 127.0.0.1:1 key_file=$dir/fleet.key old_key_file=$dir/old.key
                            password_file=$dir/redis.pw;
    server {
        listen 127.0.0.1:1;
        location /a/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_endpoint /_introspect;
            auth_oauth2_token_client_id gw;
            auth_oauth2_token_client_secret_file $dir/client.secret;
        }
        location /b/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_endpoint /_introspect;
            auth_oauth2_token_client_id gw;
            auth_oauth2_token_client_auth private_key_jwt;
            auth_oauth2_token_client_key_file $dir/client.pem;
            auth_oauth2_token_client_assertion_audience https://idp.example;
        }
        location = /_introspect { internal; proxy_pass http://idp/introspect; }
    }
}
CONF
    ($rc, $out) = OAuth2Test::run_command($NGINX, '-t', '-p', "$dir/", '-c', 'nginx.conf');
    return ($rc, $out, $dir, $key_pem);
}

sub secrets_absent {
    my ($out, $key_pem, $label) = @_;
    my ($key_body) = $key_pem =~ /-----\n(\S+)/;
    for my $secret ($CLIENT_SECRET, $FLEET, $OLD, $PASSWORD, $key_body) {
        ok(index($out, $secret) < 0, "$label: the output does not hold '" . substr($secret, 0, 12) . "...'");
    }
}

{
    my ($rc, $out, $dir, $pem) = nginx_t();
    is($rc, 0, 'all 0600: nginx -t passes') or diag($out);
    unlike($out, qr/\[warn\]/, 'all 0600: no warning') or diag($out);
    secrets_absent($out, $pem, 'all 0600');
}

{
    my ($rc, $out, $dir, $pem) = nginx_t('client.secret' => 0644, 'client.pem' => 0640,
        'fleet.key' => 0604, 'old.key' => 0400, 'redis.pw' => 0660);
    is($rc, 0, 'open files: nginx -t still passes (a warning, not an error)') or diag($out);
    like($out, qr{\[warn\] (?:\d+#\d+: )?"auth_oauth2_token_client_secret_file" directive: "\Q$dir\E/client\.secret" holds secrets, but its group and others may read it \(mode 0644\): make it 0600 or 0400},
        'client secret file 0644: warned, naming the directive and the file');
    like($out, qr{\[warn\] (?:\d+#\d+: )?"auth_oauth2_token_client_key_file" directive: "\Q$dir\E/client\.pem" holds secrets, but its group may read it \(mode 0640\)},
        'private key 0640: warned');
    like($out, qr{\[warn\] (?:\d+#\d+: )?"auth_oauth2_token_redis" directive: key_file "\Q$dir\E/fleet\.key" holds secrets, but others may read it \(mode 0604\)},
        'fleet key 0604: warned, naming the parameter');
    like($out, qr{\[warn\] (?:\d+#\d+: )?"auth_oauth2_token_redis" directive: password_file "\Q$dir\E/redis\.pw" holds secrets, but its group may read and write it \(mode 0660\)},
        'Redis password 0660: warned');
    unlike($out, qr/old\.key/, 'old_key_file 0400: no warning');
    my $warnings = () = $out =~ /\[warn\]/g;
    is($warnings, 4, 'four warnings, one per open file') or diag($out);
    secrets_absent($out, $pem, 'open files');
}

done_testing();
