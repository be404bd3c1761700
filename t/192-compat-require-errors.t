# Issue 29 item 4: each configuration error of auth_oauth2_token_require
# names the directive, the rule broken and the argument that broke it, where
# it is written (nginx's "in FILE:LINE"). The rules are the C module's
# documented ones: `$value ... [error=code]`, at least one variable, one
# error code of 400-599 other than 444 and 499; and, as for any directive,
# variables that something defines.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

run_tests();

__DATA__

=== TEST 1: an error code outside 400-599: the directive, the rule and the argument
--- config
location / { auth_oauth2_token_require $http_x_ok error=600; }
--- must_die
--- error_log
/\[emerg\] "auth_oauth2_token_require" directive has an invalid error code "error=600": it must be 400-599, excluding 444 and 499 in \S+nginx\.conf:\d+/

=== TEST 2: 499 is not a status a client can get
--- config
location / { auth_oauth2_token_require $http_x_ok error=499; }
--- must_die
--- error_log
"auth_oauth2_token_require" directive has an invalid error code "error=499": it must be 400-599, excluding 444 and 499

=== TEST 3: a code that is no number
--- config
location / { auth_oauth2_token_require $http_x_ok error=forbidden; }
--- must_die
--- error_log
"auth_oauth2_token_require" directive has an invalid error code "error=forbidden"

=== TEST 4: exception [two error= codes in one auth_oauth2_token_require]: two error codes in one directive: refused, not the last one silently kept
--- config
location / { auth_oauth2_token_require $http_x_ok error=403 error=401; }
--- must_die
--- error_log
/\[emerg\] "auth_oauth2_token_require" directive sets the error code twice \("error=403" and "error=401"\): one error= per directive; put variables that need another code in a directive of their own in \S+nginx\.conf:\d+/

=== TEST 5: a value that is not a variable
--- config
location / { auth_oauth2_token_require on; }
--- must_die
--- error_log
/\[emerg\] "auth_oauth2_token_require" directive takes variables \(and error=code\), not "on" in \S+nginx\.conf:\d+/

=== TEST 6: a lone "$"
--- config
location / { auth_oauth2_token_require $ error=403; }
--- must_die
--- error_log
"auth_oauth2_token_require" directive takes variables (and error=code), not "$"

=== TEST 7: an error code but no variable
--- config
location / { auth_oauth2_token_require error=403; }
--- must_die
--- error_log
/\[emerg\] "auth_oauth2_token_require" directive needs at least one variable in \S+nginx\.conf:\d+/

=== TEST 8: no argument at all: nginx's own message names the directive
--- config
location / { auth_oauth2_token_require; }
--- must_die
--- error_log
invalid number of arguments in "auth_oauth2_token_require" directive

=== TEST 9: a malformed variable reference
--- config
location / { auth_oauth2_token_require "${http_x_ok"; }
--- must_die
--- error_log
"auth_oauth2_token_require" directive has an invalid variable reference

=== TEST 10: a variable nothing defines: nginx's "unknown variable" names neither the directive nor the line; a warning before it does
--- http_config
map $http_x_tenant $tenant_ok { default 0; acme 1; }
--- config
location / {
    auth_oauth2_token_require $tenant_ok ${http_x_ok}-$1 error=403;
    auth_oauth2_token_require $tenant_okk;
}
--- must_die
--- error_log
/\[warn\] "auth_oauth2_token_require" directive uses "\$tenant_okk", which no module or directive defines: nginx refuses it as an unknown variable; it is written in \S+nginx\.conf:\d+/
unknown "tenant_okk" variable
--- error_log_count
which no module or directive defines: 1

=== TEST 11: exception [require inside limit_except]: the C module accepts it; nginx names the directive
--- config
location / { limit_except GET { auth_oauth2_token_require $http_x_ok; } }
--- must_die
--- error_log
"auth_oauth2_token_require" directive is not allowed here

=== TEST 12: one error code, anywhere among the variables, is accepted; variables that are defined get no warning
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require error=403 $http_x_ok $http_x_also;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
--- idp
{"t": {"json": {"active": true}}}
--- request
GET /
--- more_headers
Authorization: Bearer t
X-Ok: 1
--- error_code: 403
--- response_headers
WWW-Authenticate: Bearer realm="api", error="insufficient_scope"
--- no_error_log
which no module or directive defines
