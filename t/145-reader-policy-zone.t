# The reader's policy governs a shared zone: two locations with the same
# zone, introspection endpoint and client share entries, but each applies
# its own stale_if_error to what it finds. A location without it never
# serves STALE from an entry its sibling (with it) wrote: when the IdP
# fails it answers 502; the sibling still serves its entry STALE, which the
# first location's miss left in place. A stale window never stretches an
# entry past the limit its writer set (never past the token's exp).
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use Time::HiRes qw(sleep time);

start_servers();

sub location {
    my ($path, $cache) = @_;
    return <<CONF;
location $path {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_introspect_cache $cache;
    add_header X-Cache \$oauth2_token_cache_status always;
    proxy_pass http://backend;
}
CONF
}

my $config = location('/a/', 'zone=tokens:1m max_ttl=1s stale_if_error=30s')
    . location('/b/', 'zone=tokens:1m max_ttl=1s')
    . "location = /_introspect { internal; proxy_pass http://idp/introspect; proxy_read_timeout 300ms; }\n";

sub get {
    my ($uri, $token) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Authorization: Bearer $token"]));
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    return "$r->{status} " . ($cache // '-');
}

sub calls { scalar @{ idp_requests() } }

my $active = { json => { active => \1, sub => 'alice', exp => 4102444800 } };
my $failing = { status => 500, json => { error => 'boom' } };
idp_setup({ by_a => [$active, $failing], by_b => [$active, $failing] });
start_nginx(block_from(name => 'reader policy', config => $config)) or BAIL_OUT('nginx');

my $filled = time;
is(get('/a/', 'by_a'), '200 MISS', 'A (stale_if_error=30s) stores the answer');
is(get('/b/', 'by_a'), '200 HIT', "B (no stale_if_error) finds A's entry: one zone, one key");
is(get('/b/', 'by_b'), '200 MISS', 'B stores an answer of its own');
is(calls(), 2, 'the IdP was asked twice');

sleep 0.05 while time < $filled + 1.3;    # past max_ttl, within A's stale window
is(get('/b/', 'by_a'), '502 EXPIRED', "B does not serve STALE from A's entry: the IdP's failure stands");
is(get('/a/', 'by_a'), '200 STALE', 'A still serves it STALE: B left it in place');
is(get('/b/', 'by_a'), '502 EXPIRED', 'B again: still no stale answer');
is(get('/a/', 'by_b'), '502 EXPIRED', "A cannot stretch B's entry past the stale limit B set");
is(calls(), 6, 'every request past max_ttl asked the IdP');
stop_nginx();

done_testing();
