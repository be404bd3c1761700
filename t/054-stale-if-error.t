# stale_if_error: when the IdP fails (5xx, timeout, unreachable, unreadable)
# an active answer that expired by max_ttl less than that long ago is served,
# with $oauth2_token_cache_status STALE; never past the token's exp, never an
# inactive or negative entry, never when the IdP answered.
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
location = /_introspect { internal; proxy_pass http://idp/introspect; proxy_read_timeout 300ms; }
location = /_token { internal; proxy_pass http://idp/token; proxy_read_timeout 300ms; }
CONF

my $http = <<'CONF';
auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=1s negative_ttl=1s stale_if_error=30s;
auth_oauth2_token_exchange_cache zone=exchanged:1m max_ttl=1s stale_if_error=30s;
CONF

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    return "$r->{status} " . ($cache // '-');
}

my $exp = int(time) + 3;
my $active = { json => { active => \1, sub => 'alice', exp => 4102444800 } };
my $issued = { json => { access_token => 'narrow', issued_token_type => 'urn:ietf:params:oauth:token-type:access_token', expires_in => 3600 } };
idp_setup({
    down => [$active, { status => 500, json => { error => 'boom' } }],
    slow => [$active, { delay => 1, json => { active => \1 } }],
    gone => [$active, { json => { active => \0 } }],
    soon => [{ json => { active => \1, exp => $exp } }, { status => 503, body => 'busy' }],
    denied => [{ json => { active => \0 } }, { status => 500, body => 'boom' }],
    '/token x' => [$issued, { status => 502, body => 'bad gateway' }],
});
start_nginx(block_from(name => 'stale', http_config => $http, config => $config)) or BAIL_OUT('nginx');
my $filled = time;
is(get('/', $_), '200 MISS', "$_: cached") for qw(down slow gone soon);
is(get('/', 'denied'), '401 MISS', 'denied: cached as inactive (negative_ttl)');
is(get('/x/', 'x'), '200 MISS', 'exchange: cached');

sleep 0.05 while time < $filled + 1.3;    # past max_ttl, within stale_if_error
is(get('/', 'down'), '200 STALE', 'IdP 500: the expired active answer is served');
is(get('/', 'slow'), '200 STALE', 'IdP timeout: served stale too');
is(get('/', 'gone'), '401 EXPIRED', 'the IdP answered inactive: that answer wins over the stale one');
is(get('/', 'soon'), '200 STALE', 'IdP 503 before the token expires: served stale');
is(get('/', 'denied'), '502 EXPIRED', 'an inactive (negative) entry is never served stale');
is(get('/x/', 'x'), '200 STALE', 'exchange: the token endpoint failing serves the cached token');
my ($backend) = reverse @{ backend_requests() };
is((map { $_->[1] } grep { lc $_->[0] eq 'authorization' } @{ $backend->{headers} })[0], 'Bearer narrow',
    'exchange: the stale exchanged token went upstream');
like(error_log_text(), qr/serving cached answers past their time \(stale_if_error\)/, 'logged');
is(scalar(() = error_log_text() =~ /serving cached answers past their time/g), 1, 'logged once, not per request');

sleep 0.05 while time < $exp + 0.2;    # the token's own exp has passed
is(get('/', 'soon'), '503 EXPIRED', "never past the token's exp: the IdP's 503 stands");
stop_nginx();

done_testing();
