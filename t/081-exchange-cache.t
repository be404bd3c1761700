# The exchange cache: keys that keep audiences apart, and lifetimes that are
# independent of the introspection cache's but never outlive the subject token.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use Time::HiRes qw(sleep time);

start_servers();

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    return $r->{status};
}

sub calls_to {
    my ($path) = @_;
    return scalar grep { $_->{path} eq $path } @{ idp_requests() };
}

my $internal = <<'CONF';
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_pass http://idp/token; }
CONF

my $new = { json => { access_token => 'n', issued_token_type => 'urn:ietf:params:oauth:token-type:access_token',
    expires_in => 300 } };

# 1. Every value that shapes the exchanged token is part of the key.
idp_setup({ t => $new });
start_nginx(block_from(name => 'audiences', http_config => 'auth_oauth2_token_exchange_cache zone=x:1m;',
    config => <<'CONF' . $internal)) or BAIL_OUT('nginx');
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_audience $arg_aud;
    proxy_pass http://backend;
}
CONF
is(get('/?aud=a1', 't'), 200, 'audiences: a1 exchanged');
is(get('/?aud=a2', 't'), 200, 'audiences: a2 exchanged');
is(calls_to('/token'), 2, 'audiences: a2 did not reuse the token exchanged for a1');
is(get('/?aud=a1', 't'), 200, 'audiences: a1 again');
is(get('/?aud=a2', 't'), 200, 'audiences: a2 again');
is(calls_to('/token'), 2, 'audiences: both served from the cache');
my @audiences = map { /audience=(\w+)/ ? $1 : () } map { $_->{body} } @{ idp_requests() };
is_deeply(\@audiences, [qw(a1 a2)], 'audiences: the token endpoint saw each audience once');
stop_nginx();

# 2. The two caches expire independently.
my $both = <<'CONF' . $internal;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
CONF
idp_setup({ '/introspect t' => { json => { active => \1 } }, '/token t' => $new });
start_nginx(block_from(name => 'independent', config => $both, http_config => <<'CONF')) or BAIL_OUT('nginx');
auth_oauth2_token_introspect_cache zone=i:1m max_ttl=1s;
auth_oauth2_token_exchange_cache zone=x:1m max_ttl=300s;
CONF
is(get('/', 't'), 200, 'independent: first request');
is(get('/', 't'), 200, 'independent: second request');
is_deeply([calls_to('/introspect'), calls_to('/token')], [1, 1], 'independent: both cached');
sleep 1.3;
is(get('/', 't'), 200, 'independent: after the introspection TTL');
is_deeply([calls_to('/introspect'), calls_to('/token')], [2, 1],
    'independent: introspection asked again, the exchanged token still cached');
stop_nginx();

# 3. An exchanged token is not cached past the subject token's exp.
idp_setup({ '/introspect t' => { json => { active => \1, exp => int(time) + 2 } }, '/token t' => $new });
start_nginx(block_from(name => 'subject exp', config => $both, http_config => <<'CONF')) or BAIL_OUT('nginx');
auth_oauth2_token_exchange_cache zone=x:1m max_ttl=300s;
CONF
is(get('/', 't'), 200, 'subject exp: first request');
is(get('/', 't'), 200, 'subject exp: second request');
is(calls_to('/token'), 1, 'subject exp: exchanged once');
sleep 2.3;
idp_setup({ '/introspect t' => { json => { active => \1, exp => int(time) + 60 } }, '/token t' => $new });
is(get('/', 't'), 200, 'subject exp: after the subject token expired (and was renewed)');
is(calls_to('/token'), 1, 'subject exp: the exchange was done again, not served past exp');
stop_nginx();

done_testing();
