# Tenants in the Redis tier (issue 22 item 1). The Redis tier knows a server
# block by its server_names only (the gateways of a fleet listen on addresses
# of their own), so two server blocks of one gateway that differ only by
# `listen` used to share their answers there while this gateway's zones kept
# them apart. The probe of the issue: IdP A says active, IdP B inactive for
# the same token; server B 401 MISS, server A 200 MISS, server B again
# 200 HIT_SHARED (A's answer). Now:
#   1. such a configuration fails `nginx -t`, naming
#      auth_oauth2_token_shared_cache_tenant (on the branch point's module it
#      starts, and the probe below shows the 200 HIT_SHARED);
#   2. with different tenant ids the probe gives 401 each time; another
#      gateway with the same tenant still shares A's answer;
#   3. the same tenant id in both blocks is the operator's opt-in to share;
#   4. private_key_jwt with another key on each block keeps them apart (the
#      key's fingerprint is in the scope) without a tenant;
#   5. tls_client_auth and Curity's `phantom_token on`, whose credentials are
#      the internal location's, need a tenant with the Redis tier.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use RedisTest;
use Test::More;
use File::Temp qw(tempdir);
use Time::HiRes qw(time);

start_servers();
my $KEY = write_secret('fleet.key', ('f' x 40) . "\n");
chmod 0600, $KEY;
my $FAR = int(time) + 3600;
my $ACTIVE = { json => { active => \1, sub => 'alice', exp => $FAR } };
my $INACTIVE = { json => { active => \0 } };

sub free_port { my $p = OAuth2Test::reserve_port(); OAuth2Test::release_port($p); return $p }
my ($PORT_A, $PORT_B, $PORT_C) = map { free_port() } 1 .. 3;

sub openssl_key {
    my ($name) = @_;
    my $path = OAuth2Test::prefix() . "/$name";
    my ($rc, $out) = OAuth2Test::run_command('openssl', 'genpkey', '-algorithm', 'ed25519', '-out', $path);
    die "openssl genpkey: $out" if $rc;
    chmod 0600, $path;
    return $path;
}
my ($PEM_A, $PEM_B) = map { openssl_key("$_.pem") } qw(a b);

# One server block of the probe: introspection through the Redis tier, its
# internal location asking IdP path /introspect-$idp. %o: listen, name
# (server_name, none by default), directives (more in the API location),
# introspect => 0 (no auth_oauth2_token_introspect: the directives turn it on).
sub server_block {
    my (%o) = @_;
    my $name = defined $o{name} ? "server_name $o{name};" : '';
    my $more = $o{directives} // '';
    my $introspect = ($o{introspect} // 1) ? 'auth_oauth2_token_introspect on;' : '';
    return <<CONF;
server {
    listen 127.0.0.1:$o{port};
    $name
    add_header X-Cache-Status \$oauth2_token_cache_status always;
    location /api/ {
        $introspect
        auth_oauth2_token_introspect_endpoint /_introspect;
        auth_oauth2_token_shared_cache /_oauth2_redis;
        $more
        proxy_pass http://backend;
    }
    location = /_introspect { internal; proxy_pass http://idp/introspect-$o{idp}; }
    location = /_oauth2_redis { internal; auth_oauth2_token_redis_pass; }
}
CONF
}

sub http_config {
    my ($redis_port, @servers) = @_;
    return <<CONF . join('', @servers);
auth_oauth2_token_redis 127.0.0.1:$redis_port key_file=$KEY;
auth_oauth2_token_introspect_cache zone=tokens:1m max_ttl=60s;
auth_oauth2_token_client_id gw;
CONF
}

# nginx -t of a gateway with these server blocks (no nginx is started).
sub nginx_t {
    my ($redis_port, @servers) = @_;
    my $g = new_gateway(name => 'nginx -t', http_config => http_config($redis_port, @servers));
    OAuth2Test::spew($g->prefix . '/nginx.conf', $g->conf_text);
    return OAuth2Test::run_command($g->argv('-t'));
}

sub st { my ($r) = @_; return $r ? "$r->{status} $r->{cache}" : 'no answer' }
sub calls { my ($idp) = @_; return scalar grep { $_->{path} eq "/introspect-$idp" } @{ idp_requests() } }

# The probe of the issue, on a running gateway; $b_then is what server B must
# answer after server A's answer reached Redis.
sub probe {
    my ($label, $redis, $tok, $b_then) = @_;
    idp_setup({ "/introspect-a $tok" => $ACTIVE, "/introspect-b $tok" => $INACTIVE });
    is(st(api($PORT_B, '/api/x', $tok)), '401 MISS', "$label: server B (IdP B: inactive) refuses");
    is(st(api($PORT_A, '/api/x', $tok)), '200 MISS', "$label: server A (IdP A: active) passes");
    ok(wait_until(3, sub { scalar($redis->keys) >= 1 }), "$label: A's answer is in Redis");
    is(st(api($PORT_B, '/api/x', $tok)), $b_then, "$label: then server B answers $b_then");
}

# ---- 1. apart only by listen: refused -------------------------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    for my $case (['no server_name', undef], ['the same server_name', 'api.test']) {
        my ($what, $name) = @$case;
        my @servers = (server_block(port => $PORT_A, idp => 'a', name => $name),
            server_block(port => $PORT_B, idp => 'b', name => $name));
        my ($rc, $out) = nginx_t($redis->port, @servers);
        isnt($rc, 0, "$what, apart by listen: nginx -t refuses");
        my $shown = defined $name ? $name : '""';
        like($out, qr/\[emerg\] location "\/api\/" of server \{ listen 127\.0\.0\.1:$PORT_B; server_name \Q$shown\E; \} and location "\/api\/" of server \{ listen 127\.0\.0\.1:$PORT_A; server_name \Q$shown\E; \} would share their answers from "\/_introspect" in the Redis tier/,
            "$what: the message names both locations and their servers") or diag($out);
        like($out, qr/set "auth_oauth2_token_shared_cache_tenant" in both, different ids to keep them apart, the same id to let them share/,
            "$what: the message names the directive to set");
        next if $rc != 0;
        # The branch point's module starts it: the collision itself.
        start_nginx(block_from(http_config => http_config($redis->port, @servers)))
            or BAIL_OUT('nginx');
        probe("$what (accepted)", $redis, "tok-collide-$PORT_A", '401 MISS');
        stop_nginx();
        $redis->flushall;
    }
    $redis->stop;
}

# ---- 2. different tenants: the probe --------------------------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $http = http_config($redis->port,
        server_block(port => $PORT_A, idp => 'a', directives => 'auth_oauth2_token_shared_cache_tenant tenant-a;'),
        server_block(port => $PORT_B, idp => 'b', directives => 'auth_oauth2_token_shared_cache_tenant tenant-b;'));
    start_nginx(block_from(http_config => $http)) or BAIL_OUT('nginx with tenants');
    my $tok = 'tok-tenants-Wq3';
    probe('tenants', $redis, $tok, '401 MISS');
    is(calls('b'), 2, 'tenants: IdP B was asked both times');
    is(calls('a'), 1, 'tenants: IdP A once');
    is(st(api($PORT_A, '/api/x', $tok)), '200 HIT', 'tenants: A serves its answer from its zone');
    is(scalar($redis->keys), 1, 'tenants: one token hash in Redis');
    is(scalar(keys %{ $redis->hgetall(($redis->keys)[0]) }), 1, "tenants: with A's answer only");

    # Another gateway of the fleet with tenant-a shares A's answer.
    my $gw2 = start_gateway(name => 'gw2', http_config => http_config($redis->port,
        server_block(port => $PORT_C, idp => 'a', directives => 'auth_oauth2_token_shared_cache_tenant tenant-a;')))
        or BAIL_OUT('gateway 2');
    is(st(api($PORT_C, '/api/x', $tok)), '200 HIT_SHARED', 'tenants: another gateway with tenant-a reads A\'s answer');
    is(calls('a'), 1, 'tenants: with no IdP call');
    $gw2->stop;
    stop_nginx();
    $redis->stop;
}

# ---- 3. the same tenant: the operator lets them share ---------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $same = 'auth_oauth2_token_shared_cache_tenant shared-1;';
    my $http = http_config($redis->port, server_block(port => $PORT_A, idp => 'a', directives => $same),
        server_block(port => $PORT_B, idp => 'a', directives => $same));
    start_nginx(block_from(http_config => $http)) or BAIL_OUT('nginx with one tenant');
    my $tok = 'tok-same-tenant-77';
    idp_setup({ "/introspect-a $tok" => $ACTIVE });
    is(st(api($PORT_A, '/api/x', $tok)), '200 MISS', 'one tenant: A asks the IdP');
    ok(wait_until(3, sub { scalar($redis->keys) >= 1 }), 'one tenant: the answer is in Redis');
    is(st(api($PORT_B, '/api/x', $tok)), '200 HIT_SHARED', 'one tenant: B reads it from Redis');
    is(calls('a'), 1, 'one tenant: one IdP call');
    stop_nginx();
    $redis->stop;
}

# ---- 4. private_key_jwt: another key, another scope -----------------------------------
{
    my $redis = redis_start() or BAIL_OUT('redis');
    my $jwt = sub {
        my ($pem) = @_;
        return "auth_oauth2_token_client_auth private_key_jwt; auth_oauth2_token_client_key_file $pem;"
            . ' auth_oauth2_token_client_assertion_audience https://idp.example;';
    };
    my @servers = (server_block(port => $PORT_A, idp => 'a', directives => $jwt->($PEM_A)),
        server_block(port => $PORT_B, idp => 'b', directives => $jwt->($PEM_B)));
    my ($rc, $out) = nginx_t($redis->port, @servers);
    is($rc, 0, 'private_key_jwt, two keys: nginx -t accepts (the keys tell them apart)') or diag($out);
    start_nginx(block_from(http_config => http_config($redis->port, @servers))) or BAIL_OUT('nginx');
    probe('private_key_jwt', $redis, 'tok-keys-8Rt', '401 MISS');
    is(calls('b'), 2, 'private_key_jwt: IdP B was asked both times');
    stop_nginx();

    # The same key on both: one client, refused like any other pair apart by listen.
    @servers = (server_block(port => $PORT_A, idp => 'a', directives => $jwt->($PEM_A)),
        server_block(port => $PORT_B, idp => 'b', directives => $jwt->($PEM_A)));
    ($rc, $out) = nginx_t($redis->port, @servers);
    isnt($rc, 0, 'private_key_jwt, one key: nginx -t refuses');
    like($out, qr/"auth_oauth2_token_shared_cache_tenant"/, 'private_key_jwt, one key: naming the directive');
    $redis->stop;
}

# ---- 5. credentials the module cannot see need a tenant ------------------------------
{
    my $port = closed_port();
    for my $case (
        ['tls_client_auth', 'auth_oauth2_token_client_auth tls_client_auth;',
            qr/"auth_oauth2_token_client_auth tls_client_auth" authenticates with the internal location's client certificate/],
        ['self_signed_tls_client_auth', 'auth_oauth2_token_client_auth self_signed_tls_client_auth;',
            qr/self_signed_tls_client_auth" authenticates with the internal location's client certificate/],
        ['phantom_token on', 'phantom_token on;',
            qr/the internal location supplies the IdP credentials \("phantom_token on"\)/],
    ) {
        my ($what, $directives, $why) = @$case;
        # phantom_token turns introspection on itself.
        my $introspect = $what eq 'phantom_token on' ? 0 : 1;
        my $block = server_block(port => $PORT_A, idp => 'a', name => 'api.test', directives => $directives,
            introspect => $introspect);
        my ($rc, $out) = nginx_t($port, $block);
        isnt($rc, 0, "$what with the Redis tier, no tenant: nginx -t refuses");
        like($out, qr/"auth_oauth2_token_shared_cache" needs "auth_oauth2_token_shared_cache_tenant" here: /,
            "$what: naming the directive") or diag($out);
        like($out, $why, "$what: saying why");
        like($out, qr/\(location "\/api\/" of server \{ listen 127\.0\.0\.1:$PORT_A; server_name api\.test; \}\)/,
            "$what: and where");
        $block = server_block(port => $PORT_A, idp => 'a', name => 'api.test',
            directives => "$directives auth_oauth2_token_shared_cache_tenant idp-7;", introspect => $introspect);
        ($rc, $out) = nginx_t($port, $block);
        is($rc, 0, "$what with a tenant: nginx -t accepts") or diag($out);
    }
    my ($rc, $out) = nginx_t($port, server_block(port => $PORT_A, idp => 'a',
        directives => 'auth_oauth2_token_shared_cache_tenant "two words";'));
    isnt($rc, 0, 'a tenant id with a space: refused');
    like($out, qr/"auth_oauth2_token_shared_cache_tenant" directive needs an id of 1 to 128 letters, digits/,
        'naming the directive');
}

done_testing();
