# Every example configuration in nginx-conf/ passes `nginx -t` with the module
# built here (only the load_module path and the secret files are provided).
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
        ['redis-password', "example-redis-password\n"])
    {
        open my $s, '>', "$prefix/secrets/$_->[0]" or die $!;
        print $s $_->[1];
        close $s;
    }

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
