# auth_oauth2_token_phase preaccess: the token is checked before limit_req,
# so a rate limit can be keyed on the token's subject.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;

start_servers();

sub status_for {
    my ($token) = @_;
    my @headers = $token ? ("Authorization: Bearer $token") : ();
    return http_request(raw_request('GET', '/', \@headers))->{status};
}

my $limit = <<'CONF';
limit_req_zone $oauth2_token_sub zone=per_user:1m rate=1r/m;
limit_req_status 429;
CONF

sub config {
    my ($phase) = @_;
    return <<CONF;
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    $phase
    limit_req zone=per_user;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF
}

idp_setup({
    alice1 => { json => { active => \1, sub => 'alice' } },
    alice2 => { json => { active => \1, sub => 'alice' } },
    bob => { json => { active => \1, sub => 'bob' } },
    revoked => { json => { active => \0 } },
});

start_nginx(block_from(name => 'preaccess', http_config => $limit,
    config => config('auth_oauth2_token_phase preaccess;'))) or BAIL_OUT('nginx');
is(status_for('alice1'), 200, 'preaccess: alice passes');
is(status_for('alice2'), 429, "preaccess: alice's second request (another token) is rate limited by subject");
is(status_for('bob'), 200, 'preaccess: bob has his own budget');
is(status_for('revoked'), 401, 'preaccess: an inactive token is still refused');
is(status_for(undef), 401, 'preaccess: no token is still refused');
is(scalar @{ backend_requests() }, 2, 'preaccess: only the two allowed requests reached the backend');
stop_nginx();

idp_setup({
    alice1 => { json => { active => \1, sub => 'alice' } },
    alice2 => { json => { active => \1, sub => 'alice' } },
});
start_nginx(block_from(name => 'access', http_config => $limit, config => config(''))) or BAIL_OUT('nginx');
is(status_for('alice1'), 200, 'access (default): alice passes');
is(status_for('alice2'), 200, 'access (default): limit_req ran before the check, with an empty key');
stop_nginx();

done_testing();
