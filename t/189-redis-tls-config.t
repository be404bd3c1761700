# Native TLS to Redis (issue 28): configuration mistakes fail `nginx -t`
# naming the directive, and a correct configuration passes it.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;

start_servers();
my $KEY = write_secret('fleet.key', ('c' x 40) . "\n");
my $pki = tls_pki();
OAuth2Test::spew("$pki/garbage.pem", "not a certificate\n");
chmod 0644, "$pki/garbage.pem";

my $ON = 'auth_oauth2_token_redis_ssl on;';
my $VERIFY = "$ON auth_oauth2_token_redis_ssl_verify on; auth_oauth2_token_redis_ssl_trusted_certificate $pki/ca.pem;";

sub nginx_t {
    my (%o) = @_;
    my %b = fleet_config(name => 'conf', redis_port => 6379, shared_port => 8080, key_file => $KEY,
        redis_location => $o{loc} // '', redis => $o{redis} // '');
    $b{config} =~ s/auth_oauth2_token_redis_pass;/auth_oauth2_token_redis_pass; $o{main_pass}/ if defined $o{main_pass};
    $b{config} .= $o{more} if defined $o{more};
    my $gw = new_gateway(%b);
    OAuth2Test::spew("$gw->{prefix}/nginx.conf", $gw->conf_text);
    my ($rc, $out) = OAuth2Test::run_command($gw->argv('-t'));
    return ($rc, $out);
}

my @bad = (
    ['verify without a CA', { loc => "$ON auth_oauth2_token_redis_ssl_verify on;" },
        qr/"auth_oauth2_token_redis_ssl_verify on" needs "auth_oauth2_token_redis_ssl_trusted_certificate"/],
    ['a CA without verify', { loc => "$ON auth_oauth2_token_redis_ssl_trusted_certificate $pki/ca.pem;" },
        qr/"auth_oauth2_token_redis_ssl_trusted_certificate" has no effect without "auth_oauth2_token_redis_ssl_verify on"/],
    ['a missing CA file', { loc => "$ON auth_oauth2_token_redis_ssl_verify on; auth_oauth2_token_redis_ssl_trusted_certificate $pki/none.pem;" },
        qr/"auth_oauth2_token_redis_ssl_trusted_certificate" directive cannot read "\Q$pki\E\/none\.pem"/],
    ['a CA file that is no certificate', { loc => "$ON auth_oauth2_token_redis_ssl_verify on; auth_oauth2_token_redis_ssl_trusted_certificate $pki/garbage.pem;" },
        qr/"auth_oauth2_token_redis_ssl_trusted_certificate" "\Q$pki\E\/garbage\.pem" cannot be loaded/],
    ['a certificate without its key', { loc => "$ON auth_oauth2_token_redis_ssl_certificate $pki/client.pem;" },
        qr/"auth_oauth2_token_redis_ssl_certificate" needs "auth_oauth2_token_redis_ssl_certificate_key"/],
    ['a key without its certificate', { loc => "$ON auth_oauth2_token_redis_ssl_certificate_key $pki/client.key;" },
        qr/"auth_oauth2_token_redis_ssl_certificate_key" needs "auth_oauth2_token_redis_ssl_certificate"/],
    ['a missing key file', { loc => "$ON auth_oauth2_token_redis_ssl_certificate $pki/client.pem; auth_oauth2_token_redis_ssl_certificate_key $pki/none.key;" },
        qr/"auth_oauth2_token_redis_ssl_certificate_key" directive cannot read "\Q$pki\E\/none\.key"/],
    ['a key that does not fit', { loc => "$ON auth_oauth2_token_redis_ssl_certificate $pki/client.pem; auth_oauth2_token_redis_ssl_certificate_key $pki/redis.key;" },
        qr/"auth_oauth2_token_redis_ssl_certificate" "\Q$pki\E\/client\.pem" or its key cannot be loaded/],
    ['TLS settings without TLS', { loc => "auth_oauth2_token_redis_ssl_verify on;" },
        qr/"auth_oauth2_token_redis_ssl_verify" has no effect without "auth_oauth2_token_redis_ssl on"/],
    ['TLS off with a name', { loc => "auth_oauth2_token_redis_ssl off; auth_oauth2_token_redis_ssl_name redis.test;" },
        qr/"auth_oauth2_token_redis_ssl_name" has no effect without "auth_oauth2_token_redis_ssl on"/],
    ['TLS where no Redis location is', { more => "location /x { $ON }\n" },
        qr/"auth_oauth2_token_redis_ssl\*" directives need "auth_oauth2_token_redis_pass" in the same location/],
    ['two Redis locations that disagree', { loc => $ON, main_pass => 'auth_oauth2_token_redis_ssl_server_name on;' },
        qr/"auth_oauth2_token_redis_ssl\*" must be the same in every location with "auth_oauth2_token_redis_pass"/],
    ['an old protocol', { loc => "$ON auth_oauth2_token_redis_ssl_protocols TLSv1.2 TLSv1.1;" },
        qr/"auth_oauth2_token_redis_ssl_protocols" directive refuses "TLSv1\.1"/],
    ['a name with a port', { loc => "$ON auth_oauth2_token_redis_ssl_name redis.test:6379;" },
        qr/"auth_oauth2_token_redis_ssl_name" directive needs a host name or an IP address, without a port/],
    ['a depth of 0', { loc => "$VERIFY auth_oauth2_token_redis_ssl_verify_depth 0;" },
        qr/"auth_oauth2_token_redis_ssl_verify_depth" directive needs a depth from 1 to 100/],
    ['a duplicate', { loc => "$ON $ON" }, qr/"auth_oauth2_token_redis_ssl" directive is duplicate/],
);
for my $case (@bad) {
    my ($what, $o, $re) = @$case;
    my ($rc, $out) = nginx_t(%$o);
    isnt($rc, 0, "$what: nginx -t fails");
    like($out, $re, "$what: naming the directive") or diag($out);
}

my ($rc, $out) = nginx_t(loc => "$VERIFY auth_oauth2_token_redis_ssl_verify_depth 2;"
    . " auth_oauth2_token_redis_ssl_name redis.test; auth_oauth2_token_redis_ssl_server_name on;"
    . " auth_oauth2_token_redis_ssl_certificate $pki/client.pem; auth_oauth2_token_redis_ssl_certificate_key $pki/client.key;"
    . " auth_oauth2_token_redis_ssl_protocols TLSv1.3;");
is($rc, 0, 'every directive together passes nginx -t') or diag($out);
unlike($out, qr/client\.key" holds secrets/, 'a key file of mode 0600 gets no warning');

($rc, $out) = nginx_t(loc => $VERIFY, redis => 'sentinel=mymaster');
is($rc, 0, 'TLS with Sentinel passes nginx -t') or diag($out);
($rc, $out) = nginx_t(loc => $VERIFY, redis => 'cluster');
is($rc, 0, 'TLS with a Redis Cluster passes nginx -t (t/233 runs it)') or diag($out);

chmod 0644, "$pki/client.key";
($rc, $out) = nginx_t(loc => "$ON auth_oauth2_token_redis_ssl_certificate $pki/client.pem;"
    . " auth_oauth2_token_redis_ssl_certificate_key $pki/client.key;");
is($rc, 0, 'a key others may read still loads');
like($out, qr/"auth_oauth2_token_redis_ssl_certificate_key" directive: "\Q$pki\E\/client\.key" holds secrets/,
    'with a warning naming the directive');

done_testing();
