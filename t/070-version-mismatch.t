# A module built for one nginx version is refused by another, with nginx's
# own message naming both versions (README.md, "Loading").
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Cwd qw(abs_path);

my %builds = (
    'vendored' => ['objs/nginx', 'objs/ngx_http_auth_oauth2_token_module.so'],
    'Debian'   => ['/usr/sbin/nginx', 'objs/debian/ngx_http_auth_oauth2_token_module.so'],
);
my @present = grep { -x $builds{$_}[0] && -f $builds{$_}[1] } sort keys %builds;
plan skip_all => 'needs both the vendored and the Debian build (make && make debian)' if @present < 2;

sub version_of {
    my ($nginx) = @_;
    return sprintf '%d%03d%03d', `$nginx -v 2>&1` =~ m{nginx/(\d+)\.(\d+)\.(\d+)};
}

for my $pair (['vendored', 'Debian'], ['Debian', 'vendored']) {
    my ($module_of, $binary_of) = @$pair;
    my $module = abs_path($builds{$module_of}[1]);
    my $nginx = $builds{$binary_of}[0];
    next if version_of($builds{$module_of}[0]) eq version_of($nginx);
    my $prefix = tempdir(CLEANUP => 1);
    mkdir "$prefix/logs";
    open my $fh, '>', "$prefix/nginx.conf" or die $!;
    print $fh "load_module $module;\nerror_log stderr;\npid logs/nginx.pid;\nevents {}\n";
    close $fh;
    my $out = `$nginx -t -p $prefix -c nginx.conf 2>&1`;
    isnt($?, 0, "$binary_of nginx refuses the module built for $module_of");
    my ($want, $have) = (version_of($builds{$module_of}[0]), version_of($nginx));
    like($out, qr/module "\Q$module\E" version $want instead of $have/, "the message names both versions");
}

done_testing();
