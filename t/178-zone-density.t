# The cache zone's density (issue 25): a 1m zone holds at least 8,000
# answers of typical claims (a UUID sub, three scopes, a client id, exp),
# every one of them found again; and a zone larger than the table's 32-bit
# links reach fails nginx -t naming its directive.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use IO::Socket::INET;

start_servers();

# 1. Zones past 32g, the most a table's links reach.
OAuth2Test::run_block(block_from(name => 'a cache zone past 32g',
    http_config => 'auth_oauth2_token_introspect_cache zone=huge:33g;',
    config => 'location / { return 200; }', must_die => '',
    error_log => '"auth_oauth2_token_introspect_cache" directive zone "huge" is too large: at most 34359738368 bytes (32g)'));
OAuth2Test::run_block(block_from(name => 'a replay store past 32g',
    config => 'location / { auth_oauth2_token_dpop_replay_zone replay:40g; return 200; }',
    must_die => '',
    error_log => '"auth_oauth2_token_dpop_replay_zone" directive zone is too large: at most 34359738368 bytes (32g)'));

# 2. 9,000 distinct tokens into a 1m zone, then the newest 8,000 asked
# again: each must be a hit (a hit evicts nothing), and the IdP is not asked.
my $claims = '{"active":true,"sub":"6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a",'
    . '"scope":"openid profile orders:read","client_id":"web-app-1234","exp":4102444800}';
start_nginx(block_from(name => 'density', http_config => <<CONF, config => <<'CONF2')) or BAIL_OUT('nginx');
auth_oauth2_token_introspect_cache zone=density:1m;
server {
    listen 127.0.0.1:\$TEST_NGINX_CLOSED_PORT;
    access_log off;
    location = /introspect {
        default_type application/json;
        return 200 '$claims';
    }
}
CONF
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    add_header X-Cache $oauth2_token_cache_status always;
    empty_gif;
}
location = /_introspect { internal; proxy_pass http://127.0.0.1:$TEST_NGINX_CLOSED_PORT/introspect; }
CONF2

# One keep-alive connection, reopened when nginx closes it.
my ($sock, $buf);
sub cache_status {
    my ($i) = @_;
    $sock //= IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die $!;
    $buf //= '';
    print $sock "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer density-token-$i\r\n\r\n";
    sysread($sock, $buf, 65536, length $buf) or die "closed: $!" until $buf =~ /\r\n\r\n/;
    my ($head, $rest) = split /\r\n\r\n/, $buf, 2;
    my ($len) = $head =~ /Content-Length:\s*(\d+)/i;
    sysread($sock, $rest, 65536, length $rest) or die "closed: $!" while length($rest) < ($len // 0);
    $buf = substr($rest, $len // 0);
    undef $sock, undef $buf if $head =~ /^Connection:\s*close/mi;
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    my ($cache) = $head =~ /X-Cache:\s*(\S+)/i;
    return "$status " . ($cache // '-');
}

my %first;
$first{ cache_status($_) }++ for 1 .. 9_000;
is_deeply(\%first, { '200 MISS' => 9_000 }, 'every new token is asked and stored');
my %again;
$again{ cache_status($_) }++ for reverse 1_001 .. 9_000;
is_deeply(\%again, { '200 HIT' => 8_000 }, 'a 1m zone holds the newest 8,000');
stop_nginx();
done_testing();
