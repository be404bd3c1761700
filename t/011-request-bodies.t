# Client request bodies next to the introspection subrequest: a body nginx
# buffers to disk, and a chunked one, reach the backend intact.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use JSON::PP;

start_servers();
idp_setup({ t => { json => { active => \1 } } });
start_nginx(block_from(name => 'bodies', config => <<'CONF')) or BAIL_OUT('nginx');
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    client_max_body_size 1m;
    client_body_buffer_size 16k;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

my $body = join '', map { chr(65 + $_ % 26) } 1 .. 256 * 1024;
my $r = http_request(raw_request('POST', '/upload', ['Authorization: Bearer t'], $body));
is($r->{status}, 200, 'large body: passes');
my $echo = eval { decode_json($r->{body}) } // {};
is(length($echo->{body} // ''), length($body), 'large body: the backend got every byte');
ok(($echo->{body} // '') eq $body, 'large body: unchanged');
my $idp = idp_requests()->[-1];
is($idp->{body}, 'token=t&token_type_hint=access_token', 'large body: the IdP got only its form');

my $chunked = "POST /chunked HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Authorization: Bearer t\r\nTransfer-Encoding: chunked\r\n\r\n"
    . "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
$r = http_request($chunked);
is($r->{status}, 200, 'chunked body: passes');
$echo = eval { decode_json($r->{body}) } // {};
is($echo->{body}, 'hello world', 'chunked body: the backend got it');
stop_nginx();

done_testing();
