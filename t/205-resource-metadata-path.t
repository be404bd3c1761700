# auth_oauth2_token_resource_metadata in a location other than the one RFC
# 9728 §3.1 puts the document at (the well-known suffix inserted between the
# host and the resource's path): nginx -t passes with a [warn] naming the path
# clients look at; no warning where the location is right, where the path
# has variables, or where the location is a regular expression.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;

start_servers();
my $WARN = qr/\[warn\] (?:\d+#\d+: )?"auth_oauth2_token_resource_metadata" directive: clients look for the metadata of/;

for my $case (
    ['= /.well-known/oauth-protected-resource/mcp', 'resource=https://$host/mcp', undef],
    ['= /.well-known/oauth-protected-resource', 'resource=https://$host', undef],
    ['= /.well-known/oauth-protected-resource', 'resource=https://api.example.com/', undef],
    ['/.well-known/oauth-protected-resource/a/b/', 'resource=https://api.example.com:8443/a/b/', undef],
    ['~ ^/.well-known/oauth-protected-resource/', 'resource=https://$host/mcp', undef],
    ['= /meta', 'resource=https://$host$uri', undef],
    ['= /meta', 'resource=https://$host', undef],
    ['= /meta', 'resource=https://$host/$arg_t/mcp', undef],
    ['= /.well-known/oauth-protected-resource', 'resource=https://$host/mcp',
        '"https://$host/mcp" at "/.well-known/oauth-protected-resource/mcp" (RFC 9728 §3.1), not at "/.well-known/oauth-protected-resource"'],
    ['= /.well-known/oauth-protected-resource/mcp/', 'resource=https://api.example.com/mcp',
        'at "/.well-known/oauth-protected-resource/mcp" (RFC 9728 §3.1), not at "/.well-known/oauth-protected-resource/mcp/"'],
    ['= /mcp/.well-known/oauth-protected-resource', 'resource=https://api.example.com/mcp',
        'at "/.well-known/oauth-protected-resource/mcp" (RFC 9728 §3.1)'],
) {
    my ($location, $args, $warning) = @$case;
    my $block = block_from(config => "location $location { auth_oauth2_token_resource_metadata $args; }\n");
    OAuth2Test::write_files($block);
    my ($rc, $out) = OAuth2Test::run_command(OAuth2Test::nginx_argv('-t'));
    is($rc, 0, "nginx -t passes: location $location, $args") or diag($out);
    if (defined $warning) {
        like($out, qr/$WARN.*\Q$warning\E/, "a [warn] names where clients look") or diag($out);
    } else {
        unlike($out, $WARN, "no warning") or diag($out);
    }
}

done_testing();
