# An IdP that says no wins over anything older: an inactive answer (or
# invalid_grant from the token endpoint) for a token whose answer the zone
# kept past its time removes that answer, so a later IdP failure cannot
# serve it as STALE; a background refresh that hears "inactive" removes the
# entry it was refreshing instead of leaving it to be served until it expires.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use Time::HiRes qw(sleep time);

start_servers();

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location /x/ {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id gw;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location /r/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_introspect_cache zone=refreshed:1m max_ttl=6s refresh=10%;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; proxy_read_timeout 300ms; }
location = /_token { internal; proxy_pass http://idp/token; proxy_read_timeout 300ms; }
CONF

my $http = <<'CONF';
auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=1s stale_if_error=30s;
auth_oauth2_token_exchange_cache zone=exchanged:1m max_ttl=1s stale_if_error=30s;
CONF

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    return "$r->{status} " . ($cache // '-');
}
sub calls { scalar @{ idp_requests() } }

my $active = { json => { active => \1, sub => 'alice', exp => 4102444800 } };
my $issued = { json => { access_token => 'narrow', issued_token_type => 'urn:ietf:params:oauth:token-type:access_token', expires_in => 3600 } };
my $inactive = { json => { active => \0 } };
idp_setup({
    revoked => [$active, $inactive, { status => 500, body => 'boom' }],
    kept => [$active, { status => 500, body => 'boom' }],
    '/token revoked-x' => [$issued, { status => 400, json => { error => 'invalid_grant' } }, { status => 502, body => 'bad gateway' }],
    late => [$active, $inactive, $inactive],
});
start_nginx(block_from(name => 'inactive', http_config => $http, config => $config)) or BAIL_OUT('nginx');

my $filled = time;
is(get('/', 'revoked'), '200 MISS', 'revoked: cached while active');
is(get('/', 'kept'), '200 MISS', 'kept: cached while active');
is(get('/x/', 'revoked-x'), '200 MISS', 'exchange: cached');
sleep 0.05 while time < $filled + 1.3;    # past max_ttl, within stale_if_error
is(get('/', 'revoked'), '401 EXPIRED', 'the IdP now says inactive');
is(get('/', 'revoked'), '502 MISS', 'then the IdP fails: the active answer it replaced is not served stale');
is(get('/', 'kept'), '200 STALE', 'a token the IdP never refused is still served stale');
is(get('/x/', 'revoked-x'), '401 EXPIRED', 'exchange: invalid_grant');
is(get('/x/', 'revoked-x'), '502 MISS', 'exchange: then the token endpoint fails: the old token is not served stale');

# refresh=10% of 6 s: from 0.6 s on, a hit refreshes the entry in the background.
my $cached = time;
is(get('/r/', 'late'), '200 MISS', 'refresh: cached');
sleep 0.05 while time < $cached + 0.8;
is(get('/r/', 'late'), '200 HIT', 'late in its life: a hit, and a refresh in the background');
my $deadline = time + 3;
my $seen = '200 HIT';
while (time < $deadline) {
    $seen = get('/r/', 'late');
    last if $seen ne '200 HIT';
    sleep 0.05;
}
is($seen, '401 MISS', 'the refresh heard "inactive": the entry is gone, and the IdP is asked again');
stop_nginx();

done_testing();
