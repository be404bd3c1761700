# A cached verdict never crosses tenants: servers sharing one zone, each with
# its own internal location to its own IdP; a rotated client secret; an
# internal location that picks the IdP by a variable (auth_oauth2_token_cache_vary);
# servers added or reordered by a reload; the exchange cache likewise.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;

start_servers();

my $ZONES = <<'CONF';
auth_oauth2_token_introspect_cache zone=tokens:1m;
auth_oauth2_token_exchange_cache zone=exchanged:1m;
auth_oauth2_token_client_id gw;
CONF

# A server of tenant $name on the harness's port: its own IdP paths.
sub tenant_server {
    my ($name, %o) = @_;
    my $secret = $o{secret} // 's3cret';
    return <<CONF;
server {
    listen 127.0.0.1:\$TEST_NGINX_SERVER_PORT;
    server_name $name.test;
    auth_oauth2_token_client_secret $secret;
    location / {
        auth_oauth2_token_introspect on;
        auth_oauth2_token_introspect_endpoint /_introspect;
        add_header X-Cache \$oauth2_token_cache_status always;
        proxy_pass http://backend;
    }
    location /x/ {
        auth_oauth2_token_exchange on;
        auth_oauth2_token_token_endpoint /_token;
        add_header X-Cache \$oauth2_token_cache_status always;
        proxy_pass http://backend;
    }
    location = /_introspect { internal; proxy_pass http://idp/introspect-$name; }
    location = /_token { internal; proxy_pass http://idp/token-$name; }
}
CONF
}

sub get {
    my ($host, $uri, $token, @headers) = @_;
    my $r = http_request(raw_request('GET', $uri, ["Host: $host", "Authorization: Bearer $token", @headers]));
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    return "$r->{status} " . ($cache // '-');
}

sub calls_to {
    my ($path) = @_;
    return scalar grep { $_->{path} eq $path } @{ idp_requests() };
}

sub block {
    my ($name, @servers) = @_;
    return block_from(name => $name, http_config => $ZONES . join('', @servers), config => '');
}

my %behaviours = (
    '/introspect-a t' => { json => { active => \1, sub => 'alice' } },
    '/introspect-b t' => { json => { active => \0 } },
    '/token-a t' => { json => { access_token => 'for-a', issued_token_type => 'urn:ietf:params:oauth:token-type:access_token' } },
    '/token-b t' => { status => 400, json => { error => 'invalid_grant' } },
);

# 1. Two servers share the zones; tenant B's IdPs say no after tenant A's said yes.
idp_setup(\%behaviours);
start_nginx(block('two servers', tenant_server('a'), tenant_server('b'))) or BAIL_OUT('nginx');
is(get('a.test', '/', 't'), '200 MISS', 'two servers: A asks its IdP, active');
is(get('a.test', '/', 't'), '200 HIT', 'two servers: A hits its entry');
is(get('b.test', '/', 't'), '401 MISS', "two servers: B never gets A's entry: its IdP says inactive");
is(calls_to('/introspect-b'), 1, 'two servers: B asked its own IdP');
is(get('a.test', '/x/', 't'), '200 MISS', 'two servers: A exchanges');
is(get('b.test', '/x/', 't'), '401 MISS', "two servers: B never gets A's exchanged token");
is(calls_to('/token-b'), 1, 'two servers: B asked its own token endpoint');
stop_nginx();

# 2. A reload of the same configuration keeps the cache warm; a server added
# in front of A (positions shift) never reads A's entries, and A keeps them.
idp_setup(\%behaviours);
start_nginx(block('reload', tenant_server('a'))) or BAIL_OUT('nginx');
is(get('a.test', '/', 't'), '200 MISS', 'reload: A fills its entry');
ok(reload_nginx(block('reload', tenant_server('a'))), 'reload: same configuration');
is(get('a.test', '/', 't'), '200 HIT', 'reload: the unchanged server still hits');
ok(reload_nginx(block('reload', tenant_server('b'), tenant_server('a'))), 'reload: B added before A');
is(get('b.test', '/', 't'), '401 MISS', "reload: the new server does not read A's entry");
is(get('a.test', '/', 't'), '200 HIT', 'reload: A, now second, still hits its entry');
is(calls_to('/introspect-a'), 1, 'reload: A asked its IdP once in all');
stop_nginx();

# 3. A rotated client secret does not serve answers obtained with the old one.
idp_setup(\%behaviours);
start_nginx(block('secret', tenant_server('a'))) or BAIL_OUT('nginx');
is(get('a.test', '/', 't'), '200 MISS', 'secret: filled with the old secret');
ok(reload_nginx(block('secret', tenant_server('a', secret => 'rotated'))), 'secret: rotated');
is(get('a.test', '/', 't'), '200 MISS', 'secret: the IdP is asked again with the new secret');
is(calls_to('/introspect-a'), 2, 'secret: two IdP calls');
stop_nginx();

# 4. One internal location picks the IdP by a variable: the variable must be
# part of the key (auth_oauth2_token_cache_vary), or tenants share entries.
my $per_tenant = sub {
    my ($vary) = @_;
    return <<CONF;
map \$http_x_tenant \$tenant { default none; a a; b b; }
server {
    listen 127.0.0.1:\$TEST_NGINX_SERVER_PORT;
    server_name shared.test;
    auth_oauth2_token_client_secret s3cret;
    $vary
    location / {
        auth_oauth2_token_introspect on;
        auth_oauth2_token_introspect_endpoint /_introspect;
        add_header X-Cache \$oauth2_token_cache_status always;
        proxy_pass http://backend;
    }
    location = /_introspect { internal; proxy_pass http://idp/introspect-\$tenant; }
}
CONF
};
idp_setup(\%behaviours);
start_nginx(block('vary', $per_tenant->('auth_oauth2_token_cache_vary $tenant;'))) or BAIL_OUT('nginx');
is(get('shared.test', '/', 't', 'X-Tenant: a'), '200 MISS', "vary: tenant a's IdP says active");
is(get('shared.test', '/', 't', 'X-Tenant: a'), '200 HIT', 'vary: and a hits');
is(get('shared.test', '/', 't', 'X-Tenant: b'), '401 MISS', "vary: tenant b asks its own IdP");
is(calls_to('/introspect-b'), 1, 'vary: one call to b');
stop_nginx();

done_testing();
