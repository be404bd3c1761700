# Issue 29 item 2: the C module of the same name evaluates
# auth_oauth2_token_require only after an introspection that found the token
# active; where a location only exchanges tokens (introspection off, exchange
# on) the directive is accepted and not evaluated. Configurations written for
# it, with `require` in such a location or inherited from the http or server
# block, must load here too: `nginx -t` passes, with a [warn] naming the
# directive, the location and why it is not evaluated there. The requests
# such a location gets are exchanged as before; locations that introspect
# still check every requirement.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use Cwd qw(abs_path);

my $NGINX  = abs_path($ENV{TEST_NGINX_BINARY} || 'objs/nginx');
my $MODULE = abs_path($ENV{TEST_NGINX_MODULE} || 'objs/ngx_http_auth_oauth2_token_module.so');

# nginx -t of an http block; returns (exit status, output).
sub nginx_t {
    my ($http) = @_;
    my $dir = tempdir(CLEANUP => 1);
    mkdir "$dir/logs";
    OAuth2Test::spew("$dir/nginx.conf", <<CONF);
load_module $MODULE;
error_log logs/error.log;
events {}
http {
    upstream idp { server 127.0.0.1:1; }
$http
}
CONF
    return OAuth2Test::run_command($NGINX, '-t', '-p', "$dir/", '-c', 'nginx.conf');
}

my $WARN = qr{\[warn\] (?:\d+#\d+: )?"auth_oauth2_token_require" is not evaluated in };
my $WHY  = qr{: it is checked on the answer of an introspection, and "auth_oauth2_token_introspect" is off where tokens are only exchanged \("auth_oauth2_token_exchange on"\); set "auth_oauth2_token_introspect on" to have it checked};

{
    my ($rc, $out) = nginx_t(<<'CONF');
    map $http_x_tenant $tenant_ok { default 0; acme 1; }
    server {
        listen 127.0.0.1:1;
        server_name api.example;
        location /orders/ {
            auth_oauth2_token_exchange       on;
            auth_oauth2_token_token_endpoint /_token;
            auth_oauth2_token_client_id      gw;
            auth_oauth2_token_require        $tenant_ok error=403;
        }
        location = /_token { internal; proxy_pass http://idp/token; }
    }
CONF
    is($rc, 0, 'in an exchange-only location: nginx -t passes') or diag($out);
    like($out, qr{${WARN}location "/orders/" of server \{ listen 127\.0\.0\.1:1; server_name api\.example; \} \(1 requirement\)$WHY},
        'in an exchange-only location: a warning names the directive, the location and why') or diag($out);
    my $warnings = () = $out =~ /\[warn\]/g;
    is($warnings, 1, 'in an exchange-only location: one warning') or diag($out);
}

{
    # Inherited from the http and server blocks, as a C-module configuration
    # that applies a policy everywhere may have it.
    my ($rc, $out) = nginx_t(<<'CONF');
    map $http_x_tenant $tenant_ok { default 0; acme 1; }
    auth_oauth2_token_client_id      gw;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_require        $tenant_ok;
    server {
        listen 127.0.0.1:1;
        server_name api.example;
        auth_oauth2_token_require    $http_x_ok error=403;
        location /exchanged/ {
            auth_oauth2_token_exchange on;
        }
        location /checked/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_exchange   on;
        }
        location /open/ { }
        location = /_token { internal; proxy_pass http://idp/token; }
        location = /_introspect { internal; proxy_pass http://idp/introspect; }
    }
CONF
    is($rc, 0, 'inherited: nginx -t passes') or diag($out);
    like($out, qr{${WARN}location "/exchanged/" of server \{ listen 127\.0\.0\.1:1; server_name api\.example; \} \(2 requirements\)$WHY},
        'inherited: the exchange-only location is named, with both requirements') or diag($out);
    unlike($out, qr{location "/(?:checked|open|_token|_introspect)/?"}, 'inherited: no warning where they are evaluated or nothing is checked')
        or diag($out);
    my $warnings = () = $out =~ /\[warn\]/g;
    is($warnings, 1, 'inherited: one warning') or diag($out);
}

{
    # A configuration error of the directive itself still fails, there too.
    my ($rc, $out) = nginx_t(<<'CONF');
    server {
        listen 127.0.0.1:1;
        location /orders/ {
            auth_oauth2_token_exchange       on;
            auth_oauth2_token_token_endpoint /_token;
            auth_oauth2_token_client_id      gw;
            auth_oauth2_token_require        $http_x_ok error=302;
        }
    }
CONF
    isnt($rc, 0, 'an invalid error code in an exchange-only location still fails nginx -t');
}

run_tests();

__DATA__

=== TEST 1: exception [require where tokens are only exchanged]: exchange only: the requirement is not evaluated (an empty variable does not refuse), the token is exchanged
--- config
location /orders/ {
    auth_oauth2_token_exchange       on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id      gw;
    auth_oauth2_token_require        $http_x_never_sent error=403;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
--- idp
{"t": {"json": {"access_token": "narrow", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 200
--- idp_calls: 1
--- backend_headers
Authorization: Bearer narrow
--- error_log
/\[warn\] .*"auth_oauth2_token_require" is not evaluated in location "\/orders\/" of server/

=== TEST 2: exception [require where tokens are only exchanged]: exchange only: a token the token endpoint refuses is still refused (401)
--- config
location /orders/ {
    auth_oauth2_token_exchange       on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id      gw;
    auth_oauth2_token_require        $http_x_never_sent;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
--- idp
{"t": {"status": 400, "json": {"error": "invalid_grant"}}}
--- request
GET /orders/1
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- backend_calls: 0

=== TEST 3: exception [require where tokens are only exchanged]: exchange only: no token is 401, as without the requirement
--- config
location /orders/ {
    auth_oauth2_token_exchange       on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_client_id      gw;
    auth_oauth2_token_require        $http_x_never_sent;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
--- request
GET /orders/1
--- error_code: 401
--- idp_calls: 0
--- backend_calls: 0

=== TEST 4: exception [require where tokens are only exchanged]: the same requirement inherited into a location that introspects is evaluated there (401)
--- config
auth_oauth2_token_client_id      gw;
auth_oauth2_token_token_endpoint /_token;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_exchange       on;
auth_oauth2_token_require        $http_x_ok;
location /exchanged/ {
    proxy_pass http://backend;
}
location /checked/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"/introspect t": {"json": {"active": true, "sub": "alice"}},
 "/token t": {"json": {"access_token": "narrow", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}}}
--- request
GET /checked/1
--- more_headers
Authorization: Bearer t
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api", error="invalid_token"
--- idp_calls: 1
--- backend_calls: 0

=== TEST 5: ... and passes there once it holds; the exchange follows
--- config
auth_oauth2_token_client_id      gw;
auth_oauth2_token_token_endpoint /_token;
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_exchange       on;
auth_oauth2_token_require        $http_x_ok;
location /checked/ {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_token { internal; proxy_pass http://idp/token; }
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"/introspect t": {"json": {"active": true, "sub": "alice"}},
 "/token t": {"json": {"access_token": "narrow", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}}}
--- request
GET /checked/1
--- more_headers
Authorization: Bearer t
X-Ok: 1
--- error_code: 200
--- idp_calls: 2
--- backend_headers
Authorization: Bearer narrow
