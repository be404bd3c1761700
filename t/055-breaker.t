# auth_oauth2_token_breaker: after N consecutive IdP failures the endpoint is
# not called for a while: requests get 503 with Retry-After (or a stale answer
# where stale_if_error allows it) without touching the IdP; then one probe
# goes through and its success closes the breaker. An IdP answering 503 with
# Retry-After opens it for that long. Shared by the workers.
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
    auth_oauth2_token_breaker failures=3 window=10s open=2s;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

sub get {
    my ($token) = @_;
    my $r = http_request(raw_request('GET', '/', ["Authorization: Bearer $token"]));
    my ($retry) = map { $_->[1] } grep { lc $_->[0] eq 'retry-after' } @{ $r->{headers} };
    return "$r->{status}" . (defined $retry ? " retry=$retry" : '');
}
sub calls { scalar @{ idp_requests() } }

# 1. Three failures in a row open it; while open the IdP is not asked; after
# `open` one probe goes through and closes it on success. Two workers share it.
idp_setup({ t => [({ status => 500, body => 'boom' }) x 3, { json => { active => \1 } }] });
start_nginx(block_from(name => 'breaker', workers => 2, config => $config)) or BAIL_OUT('nginx');
is(get('t'), '502', "failure $_") for 1 .. 3;
my $opened = time;
is(calls(), 3, 'three calls so far');
like(get('t'), qr/^503 retry=[12]$/, 'open: 503 with Retry-After');
is(get('t') =~ /^503/ ? 1 : 0, 1, 'still open') for 1 .. 5;
is(calls(), 3, 'open: the IdP was not asked');
like(error_log_text(), qr/circuit breaker of the IdP endpoint opened for 2 s/, 'opening is logged');
sleep 0.05 while time < $opened + 2.1;
is(get('t'), '200', 'after open: the probe passes');
is(calls(), 4, 'one probe call');
is(get('t'), '200', 'closed again');
is(calls(), 5, 'calls flow again');
like(error_log_text(), qr/circuit breaker of the IdP endpoint closed/, 'closing is logged');
stop_nginx();

# 2. 503 with Retry-After opens it for that long, at once.
idp_setup({ t => [{ status => 503, body => 'busy', headers => { 'Retry-After' => '1' } }, { json => { active => \1 } }] });
start_nginx(block_from(name => 'retry-after', config => $config)) or BAIL_OUT('nginx');
is(get('t'), '503', 'the IdP says 503 with Retry-After');
my $busy = time;
like(get('t'), qr/^503 retry=1$/, 'open for the IdP\'s Retry-After');
is(calls(), 1, 'without asking it');
sleep 0.05 while time < $busy + 1.1;
is(get('t'), '200', 'then asked again');
stop_nginx();

# 3. With stale_if_error, an open breaker serves the stale answer instead.
idp_setup({ t => [{ json => { active => \1 } }, ({ status => 500, body => 'boom' }) x 10] });
start_nginx(block_from(name => 'breaker and stale', config => $config,
    http_config => 'auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=1s stale_if_error=60s;')) or BAIL_OUT('nginx');
my $filled = time;
is(get('t'), '200', 'cached');
sleep 0.05 while time < $filled + 1.2;
is(get('t'), '200', "IdP failure $_: stale") for 1 .. 3;
my $before = calls();
is(get('t'), '200', 'breaker open: still served stale');
is(calls(), $before, 'without asking the IdP');
stop_nginx();

done_testing();
