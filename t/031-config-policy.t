# Configuration mistakes in the policy directives (phantom, source, status,
# require_claim, require, www_authenticate, pass_options) fail `nginx -t`
# with a message naming the directive.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;

run_tests();

__DATA__

=== TEST 1: phantom without introspection
--- config
location / { auth_oauth2_token_phantom on; }
--- must_die
--- error_log
"auth_oauth2_token_phantom" needs "auth_oauth2_token_introspect on"

=== TEST 2: phantom with exchange
--- config
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_i;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_phantom on;
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_t;
}
--- must_die
--- error_log
"auth_oauth2_token_phantom" and "auth_oauth2_token_exchange" both replace the upstream's Authorization

=== TEST 3: phantom takes on or off
--- config
location / { auth_oauth2_token_phantom yes; }
--- must_die
--- error_log
"auth_oauth2_token_phantom" directive takes "on" or "off"

=== TEST 4: phantom twice
--- config
location / { auth_oauth2_token_phantom on; auth_oauth2_token_phantom off; }
--- must_die
--- error_log
"auth_oauth2_token_phantom" directive is duplicate

=== TEST 5: source: an unknown source
--- config
location / { auth_oauth2_token_source bearer form=token; }
--- must_die
--- error_log
"auth_oauth2_token_source" directive takes "bearer", "header=NAME", "query=NAME" or "cookie=NAME", not "form=token"

=== TEST 6: source: header=Authorization is what bearer is for
--- config
location / { auth_oauth2_token_source header=authorization; }
--- must_die
--- error_log
"auth_oauth2_token_source" directive cannot read the token from "header=authorization": use "bearer"

=== TEST 7: source: header=Cookie is what cookie= is for
--- config
location / { auth_oauth2_token_source header=Cookie; }
--- must_die
--- error_log
use "cookie=NAME"

=== TEST 8: source: an invalid header name
--- config
location / { auth_oauth2_token_source "header=X Token"; }
--- must_die
--- error_log
"auth_oauth2_token_source" directive has an invalid header name "X Token"

=== TEST 9: source: the same source twice
--- config
location / { auth_oauth2_token_source query=t bearer query=t; }
--- must_die
--- error_log
"auth_oauth2_token_source" directive lists "query=t" twice

=== TEST 10: source: twice in a block
--- config
location / { auth_oauth2_token_source bearer; auth_oauth2_token_source query=t; }
--- must_die
--- error_log
"auth_oauth2_token_source" directive is duplicate

=== TEST 11: require_claim: an unknown type
--- config
location / { auth_oauth2_token_require_claim tenant text acme; }
--- must_die
--- error_log
"auth_oauth2_token_require_claim" directive has an unknown claim type "text": use string, integer, boolean, array or delimited

=== TEST 12: require_claim: no value
--- config
location / { auth_oauth2_token_require_claim tenant string; }
--- must_die
--- error_log
"auth_oauth2_token_require_claim" directive needs a claim, a type and at least one value

=== TEST 13: require_claim: an invalid integer
--- config
location / { auth_oauth2_token_require_claim level integer high; }
--- must_die
--- error_log
"auth_oauth2_token_require_claim" directive has an invalid integer value "high"

=== TEST 14: require_claim: an invalid boolean
--- config
location / { auth_oauth2_token_require_claim verified boolean yes; }
--- must_die
--- error_log
"auth_oauth2_token_require_claim" directive has an invalid boolean value "yes": use true or false

=== TEST 15: require_claim: an invalid path
--- config
location / { auth_oauth2_token_require_claim a..b string x; }
--- must_die
--- error_log
"auth_oauth2_token_require_claim" directive has an invalid claim path "a..b"

=== TEST 16: require_claim: exchange only has no claims to check
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_t;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require_claim tenant string acme;
}
--- must_die
--- error_log
"auth_oauth2_token_require_claim" needs "auth_oauth2_token_introspect on"

=== TEST 17: status: an unknown situation
--- config
location / { auth_oauth2_token_status expired 401; }
--- must_die
--- error_log
"auth_oauth2_token_status" directive has an unknown situation "expired": use missing, invalid, forbidden, idp_error or idp_timeout

=== TEST 18: status: a code outside 400-599
--- config
location / { auth_oauth2_token_status missing 302; }
--- must_die
--- error_log
"auth_oauth2_token_status" directive has an invalid status: it must be 400-599, excluding 444 and 499

=== TEST 19: status: 444 is not a status
--- config
location / { auth_oauth2_token_status missing 444; }
--- must_die
--- error_log
excluding 444 and 499

=== TEST 20: status: a situation twice
--- config
location / { auth_oauth2_token_status missing 418; auth_oauth2_token_status missing 401; }
--- must_die
--- error_log
"auth_oauth2_token_status" directive sets "missing" twice

=== TEST 21: status: one argument
--- config
location / { auth_oauth2_token_status missing; }
--- must_die
--- error_log
invalid number of arguments in "auth_oauth2_token_status" directive

=== TEST 22: www_authenticate set twice in a block
--- config
location / { auth_oauth2_token_www_authenticate on; auth_oauth2_token_www_authenticate off; }
--- must_die
--- error_log
"auth_oauth2_token_www_authenticate" directive is duplicate

=== TEST 23: pass_options takes on or off
--- config
location / { auth_oauth2_token_pass_options yes; }
--- must_die
--- error_log
"auth_oauth2_token_pass_options" directive takes "on" or "off"

=== TEST 24: require in a location that only exchanges tokens: not an error, a warning (t/191)
--- config
location / {
    auth_oauth2_token_exchange on;
    auth_oauth2_token_token_endpoint /_t;
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_require $http_x_ok;
    proxy_pass http://backend;
}
--- request
GET /
--- error_code: 401
--- error_log
"auth_oauth2_token_require" is not evaluated in location "/" of server
