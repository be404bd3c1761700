# Every configuration of docs/MIGRATION.md that this nginx can load passes
# `nginx -t` with the module built here (only the load_module path and the
# secret file are provided):
#   - every "# after: NAME" block: a whole nginx.conf using this module;
#   - the "# before: NAME" blocks that need no other module: stock nginx, or a
#     configuration of another module that this one accepts unchanged.
# Blocks are the ```nginx fences whose first line is that comment.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use Cwd qw(abs_path);

my $nginx  = $ENV{TEST_NGINX_BINARY} || 'objs/nginx';
my $module = abs_path($ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so');
BAIL_OUT("run `make` first: no $nginx or module") unless -x $nginx && $module && -f $module;

my $guide = 'docs/MIGRATION.md';

# How each "before" block is checked:
#   stock   - stock nginx directives only (auth_request is built into the
#             nginx of `make` and Debian's); loaded without any module;
#   module  - another module's configuration that this module accepts as it
#             is: its load_module line is pointed at this module;
#   skip    - needs a module nobody has here; the reason is printed.
# ACM's "before" is a JSON policy, not an nginx configuration: no block.
my %before = (
    'c-module'            => ['module'],   # same .so name and directives: loads unchanged
    'curity'              => ['module'],   # Curity's phantom_token directives are accepted
    'auth-request-recipe' => ['stock'],
    'njs-introspection'   => ['skip', 'needs the njs module (js_import, js_content)'],
    'kjdev-auth-jwt'      => ['skip', 'needs kjdev\'s nginx-auth-jwt module'],
);

# One "after" per migration of the guide.
my @expected_after = qw(c-module curity-directives curity-native auth-request-recipe
                        njs-introspection acm-introspection kjdev-auth-jwt);

open my $in, '<', $guide or die "$guide: $!";
my $text = do { local $/; <$in> };
close $in;

my (@after, @befores);
while ($text =~ /^```nginx\n(.*?)^```[ \t]*$/msg) {
    my $block = $1;
    next unless $block =~ /\A# (after|before): (\S+)\n/;
    my ($kind, $name) = ($1, $2);
    if ($kind eq 'after') { push @after, [$name, $block] }
    else                  { push @befores, [$name, $block] }
}

ok(@after >= 5, 'docs/MIGRATION.md has at least 5 "# after:" configurations')
    or diag(scalar(@after) . ' found');
my %after_names;
$after_names{$_->[0]}++ for @after;
for my $name (@expected_after) {
    is($after_names{$name}, 1, "exactly one \"# after: $name\" block");
}

# Writes $conf as nginx.conf into a fresh prefix (logs/, cache/ for the
# proxy_cache_path of the recipes, the secret file, a public key set) and runs
# `nginx -t` there.
sub nginx_t {
    my ($conf) = @_;
    my $prefix = tempdir(CLEANUP => 1);
    make_path("$prefix/logs", "$prefix/cache", "$prefix/secrets");
    open my $s, '>', "$prefix/secrets/idp-client-secret" or die $!;
    print $s "example-secret\n";
    close $s;
    # As MIGRATION.md says; a file open to others gets a warning.
    chmod 0600, "$prefix/secrets/idp-client-secret" or die $!;
    # The issuer's public keys for auth_oauth2_token_jwt_keys_file: RFC 7517
    # Appendix A.1's RSA key.
    make_path("$prefix/conf");
    open my $jwks, '>', "$prefix/conf/idp-jwks.json" or die $!;
    print $jwks '{"keys":[{"kty":"RSA","kid":"2011-04-29","alg":"RS256","e":"AQAB","n":"'
        . '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP'
        . 'ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY'
        . '368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f'
        . 'M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}]}';
    close $jwks;
    open my $out, '>', "$prefix/nginx.conf" or die $!;
    print $out $conf;
    close $out;
    my $output = `$nginx -t -p $prefix -c nginx.conf 2>&1`;
    return ($? >> 8, $output);
}

for my $after (@after) {
    my ($name, $conf) = @$after;
    like($conf, qr/^events\s*\{/m, "after: $name has an events block");
    like($conf, qr/^http\s*\{/m, "after: $name has an http block");
    my $count = ($conf =~ s{^load_module \S*ngx_http_auth_oauth2_token_module\.so;}{load_module $module;}mg);
    is($count, 1, "after: $name loads the module once");
    unlike($conf, qr/^load_module (?!\Q$module\E;)/m, "after: $name loads no other module");
    my ($rc, $output) = nginx_t($conf);
    is($rc, 0, "nginx -t accepts after: $name") or diag($output);
    unlike($output, qr/\[(?:emerg|alert|crit|error|warn)\]/, "after: $name: nginx -t warns of nothing")
        or diag($output);
}

for my $b (@befores) {
    my ($name, $conf) = @$b;
    my $how = $before{$name};
    ok($how, "before: $name is known to this test") or next;
    my ($mode, $reason) = @$how;
  SKIP: {
        skip("before: $name $reason", 2) if $mode eq 'skip';
        if ($mode eq 'stock') {
            unlike($conf, qr/^load_module /m, "before: $name loads no module");
        } else {
            my $count = ($conf =~ s{^load_module \S+;}{load_module $module;}mg);
            is($count, 1, "before: $name loads one module, replaced by this one");
        }
        my ($rc, $output) = nginx_t($conf);
        is($rc, 0, "nginx -t accepts before: $name ($mode)") or diag($output);
    }
}

my %before_names;
$before_names{$_->[0]}++ for @befores;
for my $name (sort keys %before) {
    is($before_names{$name}, 1, "exactly one \"# before: $name\" block");
}

done_testing();
