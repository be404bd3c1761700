# auth_oauth2_token_source: the token from the Authorization header, another
# header, a query parameter or a cookie, tried in order; the token never
# reaches the upstream from a header, query or cookie source.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

my $http = <<'CONF';
auth_oauth2_token_introspect_endpoint /_introspect;
auth_oauth2_token_client_id gw;
CONF

my $config = <<'CONF';
location /header/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source header=X-Api-Token;
    proxy_pass http://backend;
}
location /query/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source query=access_token;
    proxy_pass http://backend;
}
location /query-uri/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source query=access_token;
    proxy_pass http://backend/rewritten/;
}
location /cookie/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source cookie=at;
    proxy_pass http://backend;
}
location /ordered/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source header=X-Api-Token cookie=at bearer;
    proxy_set_header X-Seen-Authorization $http_authorization;
    proxy_set_header X-Remote-User $remote_user;
    proxy_pass http://backend;
}
location /exchange/ {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_audience orders;
    auth_oauth2_token_source cookie=at;
    proxy_pass http://backend;
}
location /bearer-or-query/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source bearer query=access_token;
    proxy_set_header X-Request-Uri $request_uri;
    proxy_set_header X-Args $args;
    proxy_pass http://backend;
}
location /redirected/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source query=access_token;
    try_files /nonexistent @checked_again;
}
location @checked_again {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source query=access_token;
    proxy_pass http://backend;
}
location /exchange-redirected/ {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_audience orders;
    try_files /nonexistent @exchanged_again;
}
location @exchanged_again {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_token;
    auth_oauth2_token_audience orders;
    proxy_pass http://backend;
}
location /redirected-cookie/ {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source cookie=at;
    try_files /nonexistent @cookie_or_query;
}
location @cookie_or_query {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_source cookie=at query=access_token;
    proxy_pass http://backend;
}
location / {
    auth_oauth2_token_introspect on;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
location = /_token { internal; proxy_pass http://idp/token; }
CONF

run_tests(default_http_config => $http, default_config => $config);

__DATA__

=== TEST 1: header=: the whole value is the token, and the header does not reach the upstream
--- idp
{"hdr1": {"json": {"active": true}}}
--- request
GET /header/x
--- more_headers
X-Api-Token: hdr1
X-Other: kept
--- error_code: 200
--- idp_request
body: token=hdr1&token_type_hint=access_token
--- backend_headers
!X-Api-Token
X-Other: kept
!Authorization

=== TEST 2: header=: a missing header is 401 with the challenge, the IdP is not asked
--- request
GET /header/x
--- more_headers
Authorization: Bearer hdr1
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0
--- backend_calls: 0

=== TEST 3: header=: a value with a "Bearer " prefix is not a token (401 invalid_token)
--- request
GET /header/x
--- more_headers
X-Api-Token: Bearer hdr1
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer realm="api", error="invalid_token", error_description="bearer token has characters outside b64token"$
--- idp_calls: 0

=== TEST 4: header=: the same header twice is a malformed request (400), the IdP is not asked
--- request
GET /header/x
--- more_headers
X-Api-Token: hdr1
X-Api-Token: hdr2
--- error_code: 400
--- response_headers_like
WWW-Authenticate: error="invalid_request"
--- idp_calls: 0

=== TEST 5: query=: the parameter is removed from the proxied URI, the others keep their order
--- idp
{"q1": {"json": {"active": true}}}
--- request
GET /query/items?a=1&access_token=q1&b=two%20words
--- error_code: 200
--- idp_request
body: token=q1&token_type_hint=access_token
--- backend_uri: /query/items?a=1&b=two%20words

=== TEST 6: query=: the only parameter leaves no "?" behind
--- idp
{"q1": {"json": {"active": true}}}
--- request
GET /query/items?access_token=q1
--- error_code: 200
--- backend_uri: /query/items

=== TEST 7: query=: removed also when proxy_pass rewrites the URI
--- idp
{"q1": {"json": {"active": true}}}
--- request
GET /query-uri/items?access_token=q1&page=2
--- error_code: 200
--- backend_uri: /rewritten/items?page=2

=== TEST 8: query=: the value is form-decoded before it is sent to the IdP
--- idp
{"a.b~c": {"json": {"active": true}}}
--- request
GET /query/x?access_token=a%2Eb%7Ec
--- error_code: 200
--- idp_request
body: token=a.b%7Ec&token_type_hint=access_token

=== TEST 9: query=: "+" decodes to a space, which no token has (401), the IdP is not asked
--- request
GET /query/x?access_token=a+b
--- error_code: 401
--- response_headers_like
WWW-Authenticate: error="invalid_token"
--- idp_calls: 0

=== TEST 10: query=: an empty value is no token (401 without error), a prefix of the name is not the name
--- request
GET /query/x?access_token=&access_token_x=q1
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0

=== TEST 11: cookie=: the cookie is removed, the other cookies reach the upstream
--- idp
{"c1": {"json": {"active": true}}}
--- request
GET /cookie/x
--- more_headers
Cookie: theme=dark; at=c1; lang=nl
--- error_code: 200
--- idp_request
body: token=c1&token_type_hint=access_token
--- backend_headers
Cookie: theme=dark; lang=nl

=== TEST 12: cookie=: a Cookie header holding only the token is dropped
--- idp
{"c1": {"json": {"active": true}}}
--- request
GET /cookie/x
--- more_headers
Cookie: at="c1"
X-After: still-here
--- error_code: 200
--- idp_request
body: token=c1&token_type_hint=access_token
--- backend_headers
!Cookie
X-After: still-here

=== TEST 13: cookie=: found in the second of two Cookie headers
--- idp
{"c2": {"json": {"active": true}}}
--- request
GET /cookie/x
--- more_headers
Cookie: a=1
Cookie: at=c2; b=2
--- error_code: 200
--- idp_request
body: token=c2&token_type_hint=access_token
--- backend_headers
Cookie*: 2
--- response_body_like: ^(?!.*at=c2).*\["Cookie", "a=1"\], \["Cookie", "b=2"\]

=== TEST 14: sources are tried in order: the header wins; the unchecked cookie and Authorization header are withheld too
--- idp
{"first": {"json": {"active": true}}, "second": {"json": {"active": false}}}
--- request
GET /ordered/x
--- more_headers
Authorization: Bearer second
Cookie: at=second
X-Api-Token: first
--- error_code: 200
--- idp_calls: 1
--- idp_request
body: token=first&token_type_hint=access_token
--- backend_headers
!X-Api-Token
!Cookie
!Authorization
!X-Seen-Authorization

=== TEST 15: sources are tried in order: without the header, the cookie is used and removed
--- idp
{"second": {"json": {"active": true}}}
--- request
GET /ordered/x
--- more_headers
Cookie: at=second; x=1
--- error_code: 200
--- idp_request
body: token=second&token_type_hint=access_token
--- backend_headers
Cookie: x=1
!Authorization

=== TEST 16: sources are tried in order: the bearer token last, passed on unchanged; the other carriers withheld
--- idp
{"third": {"json": {"active": true}}}
--- request
GET /ordered/x
--- more_headers
Authorization: Bearer third
Cookie: at=; other=1
--- error_code: 200
--- idp_request
body: token=third&token_type_hint=access_token
--- backend_headers
Authorization: Bearer third
X-Seen-Authorization: Bearer third
Cookie: other=1

=== TEST 17: a malformed value in an earlier source ends the search
--- request
GET /ordered/x
--- more_headers
X-Api-Token: not"valid
Authorization: Bearer third
--- error_code: 401
--- response_headers_like
WWW-Authenticate: error="invalid_token"
--- idp_calls: 0

=== TEST 18: no token in any source: 401 with the plain challenge
--- request
GET /ordered/x
--- more_headers
Cookie: other=1
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="api"
--- idp_calls: 0

=== TEST 19: exchange with a cookie token: the issued token becomes the Authorization, the cookie is gone
--- idp
{"/token ck": {"json": {"access_token": "issued-for-orders", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}}}
--- request
GET /exchange/x
--- more_headers
Cookie: at=ck; keep=1
--- error_code: 200
--- idp_request
body_like: subject_token=ck&
--- backend_headers
Authorization: Bearer issued-for-orders
Cookie: keep=1

=== TEST 20: the default source is the Authorization header, which reaches the upstream unchanged
--- idp
{"plain": {"json": {"active": true}}}
--- request
GET /x?access_token=ignored
--- more_headers
Authorization: Bearer plain
Cookie: at=ignored
--- error_code: 200
--- idp_request
body: token=plain&token_type_hint=access_token
--- backend_uri: /x?access_token=ignored
--- backend_headers
Authorization: Bearer plain
Cookie: at=ignored

=== TEST 21: an unchecked query token next to a bearer token is withheld, also under an encoded name and from $request_uri
--- idp
{"b": {"json": {"active": true}}}
--- request
GET /bearer-or-query/x?access_token=evil&access%5Ftoken=evil2&page=2
--- more_headers
Authorization: Bearer b
--- error_code: 200
--- idp_request
body: token=b&token_type_hint=access_token
--- backend_uri: /bearer-or-query/x?page=2
--- backend_headers
Authorization: Bearer b
X-Request-Uri: /bearer-or-query/x?page=2
X-Args: page=2

=== TEST 22: the path keeps its exact encoding when the query token is removed
--- idp
{"q1": {"json": {"active": true}}}
--- request
GET /query/a%2Fb//c?access_token=q1
--- error_code: 200
--- backend_uri: /query/a%2Fb//c

=== TEST 23: a Cookie header with an empty token cookie does not hide a later one
--- idp
{"c2": {"json": {"active": true}}}
--- request
GET /cookie/x
--- more_headers
Cookie: at=
Cookie: at=c2
--- error_code: 200
--- idp_request
body: token=c2&token_type_hint=access_token
--- backend_headers
!Cookie

=== TEST 24: after an internal redirect (try_files) the check runs again with the token the first pass found
--- idp
{"q1": {"json": {"active": true}}}
--- request
GET /redirected/x?access_token=q1&page=1
--- error_code: 200
--- idp_calls: 2
--- idp_request
body: token=q1&token_type_hint=access_token
--- backend_uri: /redirected/x?page=1

=== TEST 25: after an internal redirect an exchange starts from the client's token, not the issued one
--- idp
{"/token orig": {"json": {"access_token": "issued", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}}}
--- request
GET /exchange-redirected/x
--- more_headers
Authorization: Bearer orig
--- error_code: 200
--- idp_calls: 2
--- idp_request
body_like: subject_token=orig&
--- backend_headers
Authorization: Bearer issued

=== TEST 26: after an internal redirect the new location's carriers are withheld too
--- idp
{"good": {"json": {"active": true}}}
--- request
GET /redirected-cookie/x?access_token=unchecked&page=1
--- more_headers
Cookie: at=good; keep=1
--- error_code: 200
--- idp_calls: 2
--- idp_request
body: token=good&token_type_hint=access_token
--- backend_uri: /redirected-cookie/x?page=1
--- backend_headers
Cookie: keep=1

=== TEST 27: a withheld Authorization header is gone for nginx's own readers too ($remote_user)
--- idp
{"second": {"json": {"active": true}}}
--- request
GET /ordered/x
--- more_headers
Authorization: Basic dXNlcjpwdw==
Cookie: at=second
--- error_code: 200
--- idp_request
body: token=second&token_type_hint=access_token
--- backend_headers
!Authorization
!X-Seen-Authorization
!X-Remote-User

=== TEST 28: cookie=: a header is rewritten by what it holds, not by its length (a second, unchecked token never rides along)
--- idp
{"GOOD": {"json": {"active": true}}}
--- request
GET /cookie/x
--- more_headers
Cookie: at=GOOD;a;a;a;a;a;a;a;a;a;a;a;a;a;a;a;a;a;a;a;at=FORGED
--- error_code: 200
--- idp_request
body: token=GOOD&token_type_hint=access_token
--- backend_headers
Cookie: a; a; a; a; a; a; a; a; a; a; a; a; a; a; a; a; a; a; a

=== TEST 29: without bearer among the sources, a client's Bearer Authorization (unchecked) never reaches the upstream
--- idp
{"c1": {"json": {"active": true}}, "unchecked": {"json": {"active": false}}}
--- request
GET /cookie/x
--- more_headers
Cookie: at=c1
Authorization: Bearer unchecked
--- error_code: 200
--- idp_calls: 1
--- idp_request
body: token=c1&token_type_hint=access_token
--- backend_headers
!Authorization
!Cookie

=== TEST 30: without bearer among the sources, other Authorization schemes (Basic for the backend) pass
--- idp
{"c1": {"json": {"active": true}}}
--- request
GET /cookie/x
--- more_headers
Cookie: at=c1
Authorization: Basic dXNlcjpwdw==
--- error_code: 200
--- backend_headers
Authorization: Basic dXNlcjpwdw==
