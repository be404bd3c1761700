# RFC 9470 step-up: auth_oauth2_token_require_acr and
# auth_oauth2_token_max_auth_age. A token that is otherwise fine but whose
# acr is not accepted, or whose auth_time is too old (or missing), gets 401
# insufficient_user_authentication with acr_values and max_age in the
# challenge (and resource_metadata); from introspection answers, from cached
# answers (the age is checked again on a hit, without an IdP call), and from
# JWTs verified at the gateway; refusals counted on the metrics page; the
# configuration mistakes nginx -t names.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64url);
use Digest::SHA qw(hmac_sha256);
use JSON::PP;

start_servers();

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $SECRET = 'step-up-test-secret-of-32-bytes-or-more';
{
    open my $fh, '>', "$dir/hs256" or die $!;
    print $fh "$SECRET\n";
    close $fh;
    chmod 0600, "$dir/hs256";
}
my $ISS = 'https://idp.test';
my $JSON = JSON::PP->new->canonical;
sub jwt {
    my (%claims) = @_;
    my $now = time;
    my %c = (iss => $ISS, aud => 'api', sub => 'alice', client_id => 'app', iat => $now,
        exp => $now + 300, jti => 'j-' . rand(), %claims);
    delete $c{$_} for grep { !defined $c{$_} } keys %c;
    my $input = encode_base64url($JSON->encode({ alg => 'HS256', typ => 'at+jwt' })) . '.'
        . encode_base64url($JSON->encode(\%c));
    return "$input." . encode_base64url(hmac_sha256($input, $SECRET));
}

my $http = <<'CONF';
auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=60s;
auth_oauth2_token_client_id gw;
auth_oauth2_token_introspect_endpoint /_introspect;
CONF

my $config = <<CONF;
auth_oauth2_token_resource_metadata_url https://\$host/.well-known/oauth-protected-resource;
location /both/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_acr phr urn:x:gold;
    auth_oauth2_token_max_auth_age 5m;
    proxy_pass http://backend;
}
location /acr/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_acr phr;
    auth_oauth2_token_resource_metadata_url off;
    proxy_pass http://backend;
}
location /age/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_max_auth_age 2s;
    auth_oauth2_token_resource_metadata_url off;
    proxy_pass http://backend;
}
location /scoped/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_require_scope admin;
    auth_oauth2_token_require_acr phr;
    auth_oauth2_token_resource_metadata_url off;
    proxy_pass http://backend;
}
location /jwt/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer $ISS;
    auth_oauth2_token_jwt_algorithms HS256;
    auth_oauth2_token_jwt_secret_file $dir/hs256;
    auth_oauth2_token_jwt_cache zone=jwt:1m max_ttl=60s;
    auth_oauth2_token_require_audience api;
    auth_oauth2_token_require_acr phr;
    auth_oauth2_token_max_auth_age 2s;
    auth_oauth2_token_resource_metadata_url off;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_metrics; }
CONF

ok(start_nginx(block_from(http_config => $http, config => $config)), 'nginx starts');

sub get {
    my ($uri, $token) = @_;
    my @h = ('Host: api.example.com');
    push @h, "Authorization: Bearer $token" if defined $token;
    my $r = http_request({ method => 'GET', uri => $uri, headers => \@h });
    return ($r->{status}, join("\n", OAuth2Test::header_values($r->{headers}, 'WWW-Authenticate')));
}
sub idp_calls { scalar @{ idp_requests() } }

my $now = time;
idp_setup({
    strong    => { json => { active => JSON::PP::true, scope => 'read', acr => 'phr', auth_time => $now - 10, exp => $now + 300 } },
    gold      => { json => { active => JSON::PP::true, acr => 'urn:x:gold', auth_time => $now, exp => $now + 300 } },
    weak      => { json => { active => JSON::PP::true, acr => 'pwd', auth_time => $now, exp => $now + 300 } },
    old       => { json => { active => JSON::PP::true, acr => 'phr', auth_time => $now - 3600, exp => $now + 300 } },
    bare      => { json => { active => JSON::PP::true, exp => $now + 300 } },
    odd       => { json => { active => JSON::PP::true, acr => ['phr'], auth_time => "$now", exp => $now + 300 } },
    recent    => { json => { active => JSON::PP::true, auth_time => $now, exp => $now + 300 } },
    inactive  => { json => { active => JSON::PP::false } },
});

my $META = ', resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"';
my $BOTH_ASK = 'acr_values="phr urn:x:gold", max_age="300"';

my ($status, $challenge) = get('/both/', 'strong');
is($status, 200, 'acr and auth_time good enough: passes');
($status, $challenge) = get('/both/', 'gold');
is($status, 200, 'the second accepted acr passes too');

($status, $challenge) = get('/both/', 'weak');
is($status, 401, 'an acr not accepted: 401');
is($challenge, qq{Bearer realm="api", error="insufficient_user_authentication", error_description="a different authentication level is required", $BOTH_ASK$META},
    'the challenge asks for the classes and the age, with the metadata');

($status, $challenge) = get('/both/', 'old');
is($status, 401, 'an auth_time too old: 401');
is($challenge, qq{Bearer realm="api", error="insufficient_user_authentication", error_description="more recent authentication is required", $BOTH_ASK$META},
    'the challenge says a more recent authentication is required');

($status, $challenge) = get('/both/', 'bare');
is($status, 401, 'no acr and no auth_time: 401');
is($challenge, qq{Bearer realm="api", error="insufficient_user_authentication", error_description="a different and more recent authentication is required", $BOTH_ASK$META},
    'both fell short');

($status, $challenge) = get('/both/', 'odd');
is($status, 401, 'an acr that is an array and an auth_time that is a string are not accepted');

($status, $challenge) = get('/both/', 'inactive');
is($challenge, qq{Bearer realm="api", error="invalid_token"$META}, 'an inactive token is invalid_token, not step-up');

($status, $challenge) = get('/acr/', 'weak');
is($challenge, 'Bearer realm="api", error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="phr"',
    'acr only: acr_values alone');
($status, $challenge) = get('/acr/', 'old');
is($status, 200, 'no age asked there: an old authentication passes');

($status, $challenge) = get('/scoped/', 'weak');
is($status, 403, 'short of scope and of acr: the scope is asked for first');
like($challenge, qr/error="insufficient_scope", scope="admin"$/, 'insufficient_scope');

# On a cache hit: the age is checked again, with no IdP call.
my $before = idp_calls();
($status) = get('/age/', 'recent');
is($status, 200, 'a recent authentication passes');
is(idp_calls(), $before + 1, 'asked the IdP once');
($status) = get('/age/', 'recent');
is($status, 200, 'and passes from the cache');
is(idp_calls(), $before + 1, 'no IdP call for the hit');
sleep 3.2;
($status, $challenge) = get('/age/', 'recent');
is($status, 401, 'the same cached answer, too old now: 401');
is($challenge, 'Bearer realm="api", error="insufficient_user_authentication", error_description="more recent authentication is required", max_age="2"',
    'max_age alone');
is(idp_calls(), $before + 1, 'decided on the cached answer: no IdP call');

# JWTs checked at the gateway, and their cache.
my $good = jwt(acr => 'phr', auth_time => time);
($status) = get('/jwt/', $good);
is($status, 200, 'a JWT with acr and a recent auth_time passes');
($status) = get('/jwt/', $good);
is($status, 200, 'again, from the JWT cache');
($status, $challenge) = get('/jwt/', jwt(acr => 'pwd', auth_time => time));
is($status, 401, 'a JWT with a weak acr: 401');
like($challenge, qr/error="insufficient_user_authentication", error_description="a different authentication level is required", acr_values="phr", max_age="2"$/, 'step-up challenge');
($status, $challenge) = get('/jwt/', jwt(acr => 'phr', auth_time => undef));
is($status, 401, 'a JWT without auth_time: 401');
sleep 3.2;
($status, $challenge) = get('/jwt/', $good);
is($status, 401, 'the cached JWT verdict, too old now: 401');
like($challenge, qr/error_description="more recent authentication is required"/, 'asks for a more recent authentication');

my $metrics = http_request({ method => 'GET', uri => '/metrics' })->{body};
like($metrics, qr/outcome="insufficient_user_authentication"[^\n]*\} [1-9]/, 'step-up refusals are counted');

stop_nginx();

# Configuration mistakes.
for my $case (
    ['auth_oauth2_token_require_acr "a b";', qr/"auth_oauth2_token_require_acr" directive has an invalid value "a b"/],
    ['auth_oauth2_token_require_acr a\"b;', qr/"auth_oauth2_token_require_acr" directive has an invalid value/],
    ['auth_oauth2_token_max_auth_age 1500ms;', qr/"auth_oauth2_token_max_auth_age" directive takes a time in whole seconds/],
    ['auth_oauth2_token_max_auth_age soon;', qr/"auth_oauth2_token_max_auth_age" directive takes a time in whole seconds/],
    ['auth_oauth2_token_max_auth_age 1m; auth_oauth2_token_max_auth_age 2m;', qr/"auth_oauth2_token_max_auth_age" directive is duplicate/],
    ['auth_oauth2_token_exchange on; auth_oauth2_token_token_endpoint /_token; auth_oauth2_token_require_acr phr;',
        qr/"auth_oauth2_token_require_acr" and "auth_oauth2_token_max_auth_age" need/],
) {
    my ($directives, $expect) = @$case;
    my $block = block_from(http_config => $http, must_die => 1,
        config => "location / { $directives proxy_pass http://backend; }\n");
    OAuth2Test::write_files($block);
    my ($rc, $out) = OAuth2Test::run_command(OAuth2Test::nginx_argv('-t'));
    isnt($rc, 0, "nginx -t fails: $directives");
    like($out, $expect, "nginx -t names the mistake: $directives");
}

done_testing();
