# refresh: a hit in the last part of an entry's life is served at once and the
# entry is refreshed in the background (one refresh per key at a time, across
# workers), so a token in steady use never waits for the IdP at expiry; a
# failed refresh leaves the entry as it is.
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
    add_header X-Sub $oauth2_token_sub always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

sub get {
    my ($token) = @_;
    my $r = http_request(raw_request('GET', '/', ["Authorization: Bearer $token"]));
    my %h = map { (lc $_->[0] => $_->[1]) } @{ $r->{headers} };
    return "$r->{status} " . ($h{'x-cache'} // '-') . ' ' . ($h{'x-sub'} // '-');
}
sub calls { scalar @{ idp_requests() } }
sub wait_calls {
    my ($n) = @_;
    my $deadline = time + 5;
    sleep 0.02 while calls() < $n && time < $deadline;
    return calls();
}

idp_setup({
    t => [{ json => { active => \1, sub => 'first' } }, { json => { active => \1, sub => 'refreshed' } }],
    f => [{ json => { active => \1, sub => 'kept' } }, { status => 500, body => 'boom' }],
});
start_nginx(block_from(name => 'refresh', workers => 2, config => $config,
    http_config => 'auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=4s refresh=50%;')) or BAIL_OUT('nginx');
my $filled = time;
is(get('t'), '200 MISS first', 'cached');
is(get('f'), '200 MISS kept', 'cached');
is(get('t'), '200 HIT first', 'early in its life: a plain hit');
is(calls(), 2, 'no refresh yet');

sleep 0.05 while time < $filled + 2.2;    # past 50% of the 4 s
my @burst = map { get('t') } 1 .. 5;
is($burst[0], '200 HIT first', 'late in its life: served from the cache at once');
is(scalar(grep { /^200 HIT (first|refreshed)$/ } @burst), 5, 'every request of the burst is a hit');
is(wait_calls(3), 3, 'and refreshed in the background, once for the burst');
is(get('f'), '200 HIT kept', 'the other entry too');
is(wait_calls(4), 4, 'its refresh fails (500)');
is(get('f'), '200 HIT kept', 'a failed refresh leaves the entry as it was');

sleep 0.05 while time < $filled + 4.2;    # the first entries' max_ttl is over
is(get('t'), '200 HIT refreshed', "past the old entry's life: the refreshed entry is a hit");
like(get('f'), qr/^502 (EXPIRED|MISS) -$/, 'the entry whose refresh failed expired as usual, and the IdP is asked');
stop_nginx();

done_testing();
