#!/usr/bin/env perl
# How many introspection results fit in a cache zone? Fills a zone of
# ZONE_SIZE (default 1m) with distinct tokens whose claims look like a real
# IdP's (a UUID sub, three scopes, a client id, exp), then probes from the
# newest token back until the first miss: a hit evicts nothing, so the
# number of hits is the number of entries the zone holds.
#
#   perl scripts/cache-sizing.pl [ZONE_SIZE] [TOKENS]
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use OAuth2Test;
use Test::More;
use IO::Socket::INET;

my $zone = shift // '1m';
my $tokens = shift // 20_000;
my $claims = '{"active":true,"sub":"6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a",'
    . '"scope":"openid profile orders:read","client_id":"web-app-1234","exp":4102444800}';

start_servers();
start_nginx(block_from(name => 'sizing', http_config => <<CONF, config => <<'CONF2')) or die;
auth_oauth2_token_introspect_cache zone=sizing:$zone;
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

my ($sock, $buf);
sub ask {
    my ($i) = @_;
    $sock //= IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port()) or die $!;
    $buf //= '';
    print $sock "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sizing-token-$i\r\n\r\n";
    sysread($sock, $buf, 65536, length $buf) until $buf =~ /\r\n\r\n/;
    my ($head, $rest) = split /\r\n\r\n/, $buf, 2;
    my ($len) = $head =~ /Content-Length:\s*(\d+)/i;
    sysread($sock, $rest, 65536, length $rest) while length($rest) < $len;
    $buf = substr($rest, $len);
    undef $sock, undef $buf if $head =~ /^Connection:\s*close/mi;    # keepalive_requests reached
    my ($cache) = $head =~ /X-Cache:\s*(\S+)/i;
    return $cache // '';
}

ask($_) for 1 .. $tokens;
my $held = 0;
for (my $i = $tokens; $i >= 1; $i--) {
    last unless ask($i) eq 'HIT';
    $held++;
}
stop_nginx();
my $bytes = $zone =~ /^(\d+)([km]?)$/i ? $1 * { '' => 1, k => 1024, m => 1 << 20 }->{ lc $2 } : 0;
printf "zone %s (%d bytes): %d entries held after %d distinct tokens; %.0f bytes per entry; %.0f entries per MB\n",
    $zone, $bytes, $held, $tokens, $bytes / ($held || 1), $held * (1 << 20) / ($bytes || 1);
ok($held > 0, 'the zone holds entries');
done_testing();
