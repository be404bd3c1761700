# Every example configuration in nginx-conf/ passes `nginx -t` with the module
# built here (only the load_module path, the secret files (client secret,
# fleet key, Redis password, DPoP nonce key, SSF bearer secret), a public key set
# and, for the Redis tier over TLS, a CA and a client certificate made by openssl
# for the run are provided).
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use Cwd qw(abs_path);

my $nginx  = $ENV{TEST_NGINX_BINARY} || 'objs/nginx';
my $module = abs_path($ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so');
BAIL_OUT("run `make` first: no $nginx or module") unless -x $nginx && $module && -f $module;

my @examples = glob('nginx-conf/*.conf');
ok(@examples >= 1, 'there are example configurations');

for my $example (@examples) {
    my $prefix = tempdir(CLEANUP => 1);
    make_path("$prefix/logs", "$prefix/secrets");
    for (['idp-client-secret', "example-secret\n"], ['fleet.key', ('0123456789abcdef' x 4) . "\n"],
        ['redis-password', "example-redis-password\n"],
        ['dpop-nonce.key', "an example nonce key of more than thirty-two bytes\n"],
        ['ssf-bearer', "an example transmitter secret\n"], ['ssf-poll-token', "an-example-poll-token\n"])
    {
        open my $s, '>', "$prefix/secrets/$_->[0]" or die $!;
        print $s $_->[1];
        close $s;
    }

    # A public JWK Set for auth_oauth2_token_jwt_keys_file: RFC 7517
    # Appendix A.1's RSA key (the example key of RFC 7638 too).
    make_path("$prefix/conf");
    open my $jwks, '>', "$prefix/conf/idp-jwks.json" or die $!;
    print $jwks '{"keys":[{"kty":"RSA","kid":"2011-04-29","alg":"RS256","e":"AQAB","n":"'
        . '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP'
        . 'ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY'
        . '368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f'
        . 'M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}]}';
    close $jwks;

    # A CA and a client certificate signed by it (nginx-conf/fleet-tls.conf).
    for my $cmd (
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=example-ca"
            . " -keyout $prefix/secrets/redis-ca.key -out $prefix/conf/redis-ca.pem",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=gateway"
            . " -CA $prefix/conf/redis-ca.pem -CAkey $prefix/secrets/redis-ca.key"
            . " -keyout $prefix/secrets/redis-client.key -out $prefix/conf/redis-client.pem",
    ) {
        system("$cmd 2>/dev/null") == 0 or BAIL_OUT("openssl: $cmd");
    }
    chmod 0600, "$prefix/secrets/redis-client.key";

    open my $in, '<', $example or die "$example: $!";
    my $conf = do { local $/; <$in> };
    my $count = ($conf =~ s{^load_module \S+;}{load_module $module;}m);
    is($count, 1, "$example loads the module");

    open my $out, '>', "$prefix/nginx.conf" or die $!;
    print $out $conf;
    close $out;

    my $output = `$nginx -t -p $prefix -c nginx.conf 2>&1`;
    is($?, 0, "nginx -t accepts $example") or diag($output);
}

done_testing();
