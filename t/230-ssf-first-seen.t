# Tokens without iat and the revocation list: such a token counts as issued
# when the gateway first saw it (the IdP's answer, or a JWT's verification
# kept in auth_oauth2_token_jwt_cache; the time is kept with the cache
# entry). After a RISC account-disabled for alice, her tokens without iat
# that the gateway saw before the event are refused (also from the cache),
# while those it first sees after the event pass; a JWT or an introspected
# token without iat that no cache remembers is refused while the revocation
# lasts.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use OIDCProvider ();
use Test::More;
use SsfTest ();
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);

my $why = OIDCProvider::oidc_provider_unavailable();
plan skip_all => $why if $why;

start_servers();
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;

sub signed {
    my ($keyfile, $jwksfile, @specs) = @_;
    return SsfTest::signed("$dir/$keyfile", "$dir/$jwksfile", @specs);
}
my $ISS = 'https://idp.test';
my $AUD = 'https://gw.test';
signed('transmitter.jwk', 'transmitter.jwks');
my $n = 0;
# JWTs without iat (each with a jti of its own, so each is a token of its own).
my %jwt = map { ($_ => (signed('issuer.jwk', 'issuer.jwks', { header => { typ => 'at+jwt' }, claims => {
    iss => $ISS, aud => 'api', exp => int(time) + 600, sub => 'alice', jti => "jwt-$_" } }))[0]) }
    qw(old new nocache);

my $config = <<CONF;
location = /ssf { auth_oauth2_token_ssf_push; }
location /api/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    auth_oauth2_token_introspect_cache zone=intro:1m max_ttl=60s;
    proxy_pass http://backend;
}
location /jwt/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer $ISS;
    auth_oauth2_token_jwt_keys_file $dir/issuer.jwks;
    auth_oauth2_token_jwt_cache zone=jwts:1m;
    auth_oauth2_token_require_audience api;
    proxy_pass http://backend;
}
location /jwt-nocache/ {
    auth_oauth2_token_jwt on;
    auth_oauth2_token_jwt_issuer $ISS;
    auth_oauth2_token_jwt_keys_file $dir/issuer.jwks;
    auth_oauth2_token_require_audience api;
    proxy_pass http://backend;
}
location /api-nocache/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF
my $http = "auth_oauth2_token_ssf_receiver zone=ssf:1m issuer=$ISS audience=$AUD keys=$dir/transmitter.jwks;";
idp_setup({ map { ("tok-$_" => { json => { active => \1, sub => 'alice', iss => $ISS } }) } qw(old new nocache) });
start_nginx(block_from(name => 'first seen', config => $config, http_config => $http)) or BAIL_OUT('nginx');

sub get {
    my ($uri, $token) = @_;
    return http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]))->{status};
}
sub idp_count { scalar @{ idp_requests() } }

# Seen before the event: the opaque token (cached) and the JWT (cached).
is(get('/api/', 'tok-old'), 200, 'alice\'s opaque token without iat passes (first seen now)');
is(get('/jwt/', $jwt{old}), 200, 'alice\'s JWT without iat passes (first seen now)');
is(get('/jwt-nocache/', $jwt{nocache}), 200, 'alice\'s JWT without iat passes where no cache keeps it');
is(get('/api-nocache/', 'tok-nocache'), 200, 'alice\'s opaque token without iat passes where no cache keeps it');

# The event, issued the next second (a SET may be up to 60 s ahead).
my $event_iat = int(time) + 1;
my ($set) = signed('transmitter.jwk', 'transmitter.jwks', { claims => { iss => $ISS, aud => $AUD,
    iat => $event_iat, jti => 'set-1', events => {
        'https://schemas.openid.net/secevent/risc/event-type/account-disabled' =>
            { subject => { format => 'iss_sub', iss => $ISS, sub => 'alice' } } } } });
is(http_request(raw_request('POST', '/ssf', ['Content-Type: application/secevent+jwt'], $set))->{status}, 202,
    'account-disabled for alice: accepted');
my $calls = idp_count();
is(get('/api/', 'tok-old'), 401, 'her opaque token seen before the event is refused');
is(idp_count(), $calls, '... from the cache (its entry kept the time it was first seen)');
is(get('/jwt/', $jwt{old}), 401, 'her JWT seen before the event is refused');
is(get('/jwt-nocache/', $jwt{nocache}), 401, 'her JWT that no cache remembers is refused');
is(get('/api-nocache/', 'tok-nocache'), 401, 'her opaque token that no cache remembers is refused');

# After the event's second: tokens the gateway sees for the first time.
sleep 0.05 while int(time) <= $event_iat;
is(get('/api/', 'tok-new'), 200, 'an opaque token without iat first seen after the event passes');
is(get('/api/', 'tok-new'), 200, '... also from the cache');
is(get('/jwt/', $jwt{new}), 200, 'a JWT without iat first verified after the event passes');
is(get('/jwt-nocache/', $jwt{nocache}), 401, 'a JWT without iat that no cache remembers is still refused');
is(get('/api-nocache/', 'tok-nocache'), 401, 'an opaque token without iat that no cache remembers is still refused');

done_testing();
