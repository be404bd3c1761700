# Self-test of the harness (t/lib/OAuth2Test.pm) and of the test IdP and echo
# backend (t/idp/test_idp.py). The module is loaded, but no location uses its
# directives: this proves the plumbing the other suites stand on, including
# that a wrong expectation fails.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $LIB = abs_path(dirname($INC{'OAuth2Test.pm'}));

# ---- the parser --------------------------------------------------------------

sub parse_error {
    my ($text) = @_;
    eval { OAuth2Test::parse_blocks($text, 'self-test') };
    return $@;
}
like(parse_error("=== T\n--- eror_code: 200\n"), qr/unknown section 'eror_code'/, 'parser: unknown section dies');
like(parse_error("=== T\n--- config\nx\n--- config\ny\n"), qr/given twice/, 'parser: duplicate section dies');
like(parse_error("=== T\n--- repeat: two\n--- request\nGET /\n"), qr/whole number/, 'parser: bad number dies');
like(parse_error("=== T\n-- config\nx\n"), qr/text before the first section/, 'parser: mistyped section line dies');
like(parse_error("=== T\n--- error_code: 200\n"), qr/without a request/, 'parser: expectations need a request');
like(parse_error("=== T\n--- must_die: yes\n"), qr/no value/, 'parser: must_die takes no value');
{
    my ($b) = OAuth2Test::parse_blocks("=== TEST 1: x\n--- config\na\n\n  b\n\n\n--- skip_reason: GET /\n"
        . "--- main_config:\n--- must_die\n\n=== TEST 2: y\n--- workers: auto\n");
    is($b->{name}, 'TEST 1: x', 'parser: block name');
    is($b->{config}, "a\n\n  b", 'parser: trailing blank lines and the final newline are dropped');
    is($b->{skip_reason}, "GET /", "parser: one-line form");
    is($b->{main_config}, "", "parser: empty one-line value");
    ok(exists $b->{must_die}, 'parser: flag section');
}

# ---- the HTTP response parser --------------------------------------------------

{
    my $r = OAuth2Test::parse_response("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
        . "Transfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    is($r->{status}, 200, 'parse_response: skips 100 Continue');
    is($r->{body}, 'hello world', 'parse_response: decodes chunks');
    ok($r->{complete}, 'parse_response: chunked end seen');
    is_deeply([map { $_->[1] } grep { $_->[0] eq 'X-A' } @{ $r->{headers} }], [1, 2],
        'parse_response: keeps duplicate headers in order');
    $r = OAuth2Test::parse_response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    ok(!$r->{complete}, 'parse_response: short Content-Length body is incomplete');
    $r = OAuth2Test::parse_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef");
    is($r->{body}, 'abc', 'parse_response: body cut at Content-Length');
    $r = OAuth2Test::parse_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 'HEAD');
    ok($r->{complete} && $r->{body} eq '', 'parse_response: HEAD has no body');
}

# ---- helpers for custom Perl tests -------------------------------------------------

start_servers();
ok(server_port() && idp_port() && backend_port() && closed_port(), 'helpers: four ports');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => closed_port(), Timeout => 2),
    'helpers: the closed port refuses connections');

idp_setup({ seq => [{ status => 500, body => 'first' }, { json => { active => JSON::PP::true() } }] });
my $helpers = block_from(name => 'helpers', config => <<'CONF');
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=seq";
}
location /ssi {
    ssi on;
    ssi_types application/json;
    proxy_pass http://backend;
}
location / {
    proxy_pass http://backend;
}
CONF
ok(start_nginx($helpers), 'helpers: start_nginx');
ok(nginx_pid() =~ /^\d+$/, 'helpers: nginx_pid');
is(scalar(my @w = worker_pids()), 1, 'helpers: one worker');
{
    my @r = map { http_request({ method => 'GET', uri => '/idp' }) } 1 .. 3;
    is_deeply([map { $_->{status} } @r], [500, 200, 200], 'behaviour list: n-th call, then the last repeats');
    is($r[0]{body}, 'first', 'behaviour list: raw body');
    my $calls = idp_requests();
    is(scalar @$calls, 3, 'idp_requests: every call recorded');
    is($calls->[0]{method}, 'POST', 'idp_requests: method');
    is($calls->[0]{path}, '/introspect', 'idp_requests: path');
    is($calls->[0]{body}, 'token=seq', 'idp_requests: body');
    ok((grep { ref $_ eq 'ARRAY' && @$_ == 2 } @{ $calls->[0]{headers} }) == @{ $calls->[0]{headers} },
        'idp_requests: headers are [name, value] pairs');

    my $r = http_request({ method => 'PUT', uri => '/put?q=1', body => 'xyz',
        headers => [['X-A', '1'], 'X-A: 2', 'Host: example.test'] }, 5);
    is($r->{status}, 200, 'http_request hashref: status');
    my $last = backend_requests()->[-1];
    is($last->{method}, 'PUT', 'backend_requests: method');
    is($last->{path}, '/put?q=1', 'backend_requests: path with query');
    is($last->{body}, 'xyz', 'backend_requests: body');
    is_deeply([map { $_->[1] } grep { $_->[0] eq 'X-A' } @{ $last->{headers} }], [1, 2],
        'backend_requests: duplicate headers in order');
    like(error_log_text(), qr/http header: "Host: example\.test"/, 'http_request: a given Host replaces the default');

    $r = http_request("GET /ssi HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    is((map { $_->[1] } grep { lc $_->[0] eq 'transfer-encoding' } @{ $r->{headers} })[0], 'chunked',
        'http_request: a chunked response');
    like($r->{body}, qr/\A\{"method": "GET", "uri": "\/ssi".*\}\z/s, 'http_request: chunked body decoded');

    my @many = http_requests([map { raw_request('GET', "/p$_") } 1 .. 5]);
    is_deeply([map { $_->{status} } @many], [(200) x 5], 'http_requests: all answered');
    like($many[4]{body}, qr{"uri": "/p5"}, 'http_requests: responses in request order');

    idp_reset();
    is(scalar @{ backend_requests() }, 0, 'idp_reset: records cleared');

    my @old = worker_pids();
    my $new = block_from(name => 'reloaded', config => 'location / { return 200 "new config"; }');
    ok(reload_nginx($new), 'reload_nginx: new workers up');
    my @now = worker_pids();
    ok(@now == 1 && $now[0] != $old[0], 'reload_nginx: the worker was replaced');
    is(http_request(raw_request('GET', '/'))->{body}, 'new config', 'reload_nginx: the new configuration serves');
    like(error_log_text(), qr/reconfiguring/, 'error_log_text: has the reload');
    idp_setup({ junk => { mode => 'garbage' } });
    ok(reload_nginx(block_from(name => 'garbage', config => <<'CONF')), 'reload_nginx: again');
location / {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=junk";
}
CONF
    # nginx takes a non-HTTP answer for an HTTP/0.9 one: a 200 whose body is
    # the garbage, passed to the client as HTTP/0.9 (no status line at all).
    $r = http_request(raw_request('GET', '/'));
    is($r->{raw}, "this is not HTTP at all\r\n\r\n", 'garbage: relayed as an HTTP/0.9 answer');
    like(error_log_text(), qr/upstream sent no valid HTTP\/1\.0 header/, 'garbage: logged');
    my $bad = block_from(name => 'bad', config => 'location / { return 200 "x" }');
    my ($said, $reloaded) = ('');
    {
        my $builder = Test::More->builder;
        my $stderr = $builder->failure_output;
        $builder->failure_output(\$said);
        $reloaded = reload_nginx($bad);
        $builder->failure_output($stderr);
    }
    ok(!$reloaded, 'reload_nginx: a refused configuration is reported');
    like($said, qr/refused: .*\[emerg\].*unexpected "\}"/, 'reload_nginx: says why');
    is(http_request(raw_request('GET', '/'))->{raw}, "this is not HTTP at all\r\n\r\n",
        'reload_nginx: the old configuration still serves');
    my $master = nginx_pid();
    stop_nginx();
    ok(!-e "/proc/$master" || slurp_status($master) =~ /^State:\s+Z/m, 'stop_nginx: the master is gone');
    ok(!grep({ -e "/proc/$_" && slurp_status($_) !~ /^State:\s+Z/m } @now), 'stop_nginx: the worker is gone');
}

sub slurp_status {
    open my $fh, '<', "/proc/$_[0]/status" or return '';
    local $/;
    return <$fh>;
}

# ---- a wrong expectation fails ---------------------------------------------------------

my $tmp = tempdir(CLEANUP => 1);

sub run_child {
    my ($name, $perl, %env) = @_;
    open my $fh, '>', "$tmp/$name.t" or die $!;
    print $fh "use strict; use warnings; use lib '$LIB'; use OAuth2Test;\n$perl";
    close $fh;
    local @ENV{ keys %env } = values %env;
    my $out = `$^X $tmp/$name.t 2>&1`;
    return ($? >> 8, $out);
}

{
    my ($rc, $out) = run_child('failing', <<'T');
run_tests();
__DATA__

=== FAIL 1: wrong status
--- config
location / { return 200 "ok"; }
--- request
GET /
--- error_code: 404
--- response_body: ok

=== FAIL 2: wrong backend header and call count
--- config
location / { proxy_pass http://backend; }
--- request
GET /
--- backend_headers
X-Nope: 1
--- backend_calls: 2

=== FAIL 3: log expectations
--- config
location / { return 204; }
--- request
GET /
--- error_code: 204
--- error_log
this line is never logged
--- no_error_log
start worker process

=== FAIL 4: must_die on a valid configuration
--- config
location / { return 204; }
--- must_die

=== FAIL 5: response header and body
--- config
location / { return 200 "text"; }
--- request
GET /
--- response_headers
!Content-Type
--- response_body_like: nomatch

=== FAIL 6: concurrent statuses
--- config
location / { return 200 "x"; }
--- request
GET /
--- concurrent: 3
--- error_code: 201

=== FAIL 7: IdP request body
--- config
location / { proxy_pass http://idp/introspect; proxy_method POST; proxy_set_body "token=a"; }
--- request
GET /
--- idp_request
body: token=b
T
    isnt($rc, 0, 'failing expectations: the file fails');
    my @not_ok = $out =~ /^(not ok \d+ - .*)$/mg;
    is(scalar @not_ok, 10, 'failing expectations: exactly the ten wrong ones fail')
        or diag(join "\n", @not_ok);
    like($out, qr/^not ok \d+ - FAIL 1: wrong status: status$/m, 'failing expectations: status');
    like($out, qr/^ok \d+ - FAIL 1: wrong status: response body$/m, 'failing expectations: right body passes');
    like($out, qr/^not ok \d+ - FAIL 2: .*: backend calls$/m, 'failing expectations: backend calls');
    like($out, qr/^not ok \d+ - FAIL 3: .*lacks 'start worker process'$/m, 'failing expectations: no_error_log');
    like($out, qr/^not ok \d+ - FAIL 4: .*nginx -t fails$/m, 'failing expectations: must_die');
    like($out, qr/^not ok \d+ - FAIL 6: .*all 3 concurrent responses have status 201$/m,
        'failing expectations: concurrent');
    like($out, qr/error\.log, last 30 lines/, 'failing expectations: the log tail is shown');
}
{
    my ($rc, $out) = run_child('typo', "run_tests();\n__DATA__\n=== T\n--- confg\nx\n");
    isnt($rc, 0, 'typo: the file fails');
    like($out, qr/unknown section 'confg'/, 'typo: says which section');
}
{
    my ($rc, $out) = run_child('nobinary', "run_tests();\n__DATA__\n=== T\n--- config\nx\n",
        TEST_NGINX_BINARY => "$tmp/no-nginx");
    like($out, qr/^Bail out!.*no nginx binary.*run `make`/m, 'missing binary: bails out, saying to run make');
}

# ---- blocks ------------------------------------------------------------------------

run_tests();

__DATA__

=== TEST 1: plain proxy to the echo backend
# A proxy_set_header in the location replaces every one inherited from http{},
# the harness's `Connection ""` too: this backend request says "close".
--- config
location / {
    proxy_set_header X-Added added;
    proxy_pass http://backend;
}
--- request
GET /api/x?a=1&b=two
--- more_headers
X-Dup: one
X-Dup: two
X-Single: 1
--- error_code: 200
--- response_headers
Content-Type: application/json
!X-Absent
--- response_headers_like
Content-Length: ^\d+$
--- response_body_like: "uri": "/api/x\?a=1&b=two"
--- backend_calls: 1
--- idp_calls: 0
--- backend_uri: /api/x?a=1&b=two
--- backend_headers
X-Added: added
X-Single: 1
X-Dup*: 2
Host: backend
!Authorization
--- backend_request
method: GET
path: /api/x?a=1&b=two
header Connection: close
body:
--- no_error_log
[error]
[alert]

=== TEST 2: an internal location posts a form to the IdP
--- config
location / {
    proxy_pass http://backend;
}
location /idp {
    internal;
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=tok1&token_type_hint=access_token";
    proxy_set_header Content-Type application/x-www-form-urlencoded;
    proxy_set_header Authorization "Basic Z3c6czNjcmV0";
}
location = /check {
    error_page 418 = /idp;
    return 418;
}
--- idp
{"tok1": {"json": {"active": true, "sub": "alice"}, "headers": {"X-Idp": "yes"}}}
--- request
GET /check
--- more_headers
Cookie: c=1
--- error_code: 200
--- response_headers
X-Idp: yes
Content-Type: application/json
--- response_body: {"active": true, "sub": "alice"}
--- idp_calls: 1
--- backend_calls: 0
--- idp_request
method: POST
path: /introspect
header Content-Type: application/x-www-form-urlencoded
header Authorization: Basic Z3c6czNjcmV0
header Content-Length*: 1
body: token=tok1&token_type_hint=access_token
body_like: ^token=tok1&
--- error_log
http proxy status 200
/http upstream request: "\/idp\?"/

=== TEST 3: an unknown token is inactive
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=nobody";
}
--- idp
{"tok1": {"json": {"active": true}}}
--- request
GET /idp
--- response_body: {"active": false}
--- idp_calls: 1
--- idp_request
body: token=nobody

=== TEST 4: a request body, and placeholders
--- config
location / {
    proxy_set_header X-Ports "$TEST_NGINX_IDP_PORT $TEST_NGINX_BACKEND_PORT";
    proxy_pass http://127.0.0.1:$TEST_NGINX_BACKEND_PORT;
}
--- request
POST /upload

line one
line two
--- more_headers
Content-Type: text/plain
--- backend_request
method: POST
body_like: \Aline one\nline two\z
header Content-Length: 17
header X-Ports: $TEST_NGINX_IDP_PORT $TEST_NGINX_BACKEND_PORT

=== TEST 5: a user file gets a final newline
--- user_files
>>> secret.txt
s3cret
--- config
location /secret { default_type text/plain; alias $TEST_NGINX_PREFIX/secret.txt; }
--- request
GET /secret
--- response_body_like: \As3cret\n\z
--- response_headers
Content-Length: 7

=== TEST 6: a user file without a final newline, in a subdirectory
--- user_files
>>> sub/dir/raw.txt (no newline)
abc
--- config
location /raw { default_type text/plain; alias $TEST_NGINX_PREFIX/sub/dir/raw.txt; }
--- request
GET /raw
--- response_body: abc
--- response_headers
Content-Length: 3

=== TEST 7: a user file with CRLF line ends
--- user_files
>>> crlf.txt (crlf)
x
y
--- config
location /crlf { default_type text/plain; alias $TEST_NGINX_PREFIX/crlf.txt; }
--- request
GET /crlf
--- response_body_like: \Ax\r\ny\r\n\z

=== TEST 8: an invalid directive makes nginx -t fail
--- config
location / {
    no_such_directive_here on;
}
--- must_die
--- error_log
unknown directive "no_such_directive_here"
/nginx\.conf:\d+/
--- no_error_log
test is successful

=== TEST 9: repeat sends the request several times
--- config
location / {
    proxy_pass http://backend;
}
--- request
GET /again
--- repeat: 5
--- error_code: 200
--- response_body_like: "uri": "/again"
--- backend_calls: 5

=== TEST 10: concurrent requests all arrive
--- config
location / {
    proxy_pass http://backend;
}
--- request
GET /many
--- concurrent: 50
--- timeout: 20
--- error_code: 200
--- response_body_like: "method": "GET"
--- backend_calls: 50
--- no_error_log
[alert]
[crit]

=== TEST 11: concurrent requests wait for a slow IdP together
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=slow";
}
--- idp
{"slow": {"delay": 0.5, "json": {"active": true}}}
--- request
GET /idp
--- concurrent: 8
--- timeout: 3
--- response_body: {"active": true}
--- idp_calls: 8

=== TEST 12: an IdP that closes without answering is a 502
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=gone";
}
--- idp
{"gone": {"mode": "close"}}
--- request
GET /idp
--- error_code: 502
--- idp_calls: 1
--- error_log
upstream prematurely closed connection while reading response header from upstream

=== TEST 13: an IdP that resets the connection is a 502
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=rst";
}
--- idp
{"rst": {"mode": "reset"}}
--- request
GET /idp
--- error_code: 502
--- idp_calls: 1
--- error_log
(104: Connection reset by peer) while reading response header from upstream

=== TEST 14: an IdP that hangs trips proxy_read_timeout
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=hang";
    proxy_read_timeout 300ms;
}
--- idp
{"hang": {"mode": "hang"}}
--- request
GET /idp
--- error_code: 504
--- timeout: 5
--- error_log
upstream timed out (110: Connection timed out) while reading response header from upstream

=== TEST 15: a truncated IdP answer
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=short";
}
--- idp
{"short": {"mode": "truncate"}}
--- request
GET /idp
--- error_log
upstream prematurely closed connection while reading upstream

=== TEST 16: an oversize IdP answer
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "token=big";
}
--- idp
{"big": {"mode": "oversize", "size": 70000}}
--- request
GET /idp
--- response_headers
Content-Length: 70000
--- response_body_like: \A\{"active":true,"pad":"x+"\}\z

=== TEST 17: a status, a content type and extra headers from the IdP
--- config
location /idp {
    proxy_pass http://idp/introspect;
    proxy_method POST;
    proxy_set_body "subject_token=tea";
}
--- idp
{"tea": {"status": 418, "body": "short and stout", "content_type": "text/plain",
         "headers": [["X-Pot", "1"], ["X-Pot", "2"]]}}
--- request
GET /idp
--- error_code: 418
--- response_headers
Content-Type: text/plain
X-Pot*: 2
--- response_body: short and stout

=== TEST 19: the closed port refuses connections
--- config
location / { proxy_pass http://127.0.0.1:$TEST_NGINX_CLOSED_PORT; }
--- request
GET /
--- error_code: 502
--- error_log
/connect\(\) failed \(111: Connection refused\)/

=== TEST 20: skipped block
--- skip_reason: proves skip_reason works
--- config
location / { return 500; }
--- request
GET /
--- error_code: 200

=== TEST 21: two workers, main_config, http_config and HEAD
--- workers: 2
--- main_config
env OAUTH2_HARNESS_SELF_TEST;
--- http_config
map $uri $harness_mapped { default "mapped"; }
--- config
location / {
    add_header X-Mapped $harness_mapped always;
    return 200 "hello\n";
}
--- request
HEAD /
--- response_headers
X-Mapped: mapped
Content-Length: 6
--- response_body:
--- error_log_count
/start worker process \d+$/: 2
