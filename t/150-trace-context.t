# Issue 22 item 9: the client's W3C trace context reaches the IdP only when
# it is valid (SECURITY.md, "What reaches the IdP"): one traceparent of the
# grammar, a tracestate of the grammar and at most 32 members and 512 bytes,
# and only with a valid traceparent. Whatever is not valid is dropped, never
# the request: every case below is answered 200. The test IdP records the
# headers it got.
use strict;
use warnings;
use lib 't/lib';
use OAuth2Test;
use Test::More;

start_servers();

my $TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
my $seven_k = join ',', map { "vendor$_=" . ('x' x 40) } 1 .. 150;
my $list33 = join ',', map { "k$_=v" } 1 .. 33;
my $list32 = join ',', map { "k$_=v" } 1 .. 32;
my $bytes512 = 'a=' . ('v' x 254) . ',b=' . ('v' x 253);
die 'the 512-byte list is not 512 bytes' unless length $bytes512 == 512;

# [name, [client header lines], expected traceparent at the IdP (undef: none),
#  expected tracestate (undef: none)]
my @cases = (
    ['valid, both go on unchanged', ["traceparent: $TP", 'tracestate: rojo=00f067aa0ba902b7,congo=t61rcWkgMzE'],
        $TP, 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE'],
    ['a 7 KB tracestate is dropped, the traceparent goes on', ["traceparent: $TP", "tracestate: $seven_k"],
        $TP, undef],
    ['33 list members: dropped', ["traceparent: $TP", "tracestate: $list33"], $TP, undef],
    ['32 list members: kept', ["traceparent: $TP", "tracestate: $list32"], $TP, $list32],
    ['512 bytes: kept', ["traceparent: $TP", "tracestate: $bytes512"], $TP, $bytes512],
    ['513 bytes: dropped', ["traceparent: $TP", "tracestate: ${bytes512}x"], $TP, undef],
    ['a key twice: tracestate dropped', ["traceparent: $TP", 'tracestate: a=1,a=2'], $TP, undef],
    ['an upper-case key: tracestate dropped', ["traceparent: $TP", 'tracestate: Vendor=1'], $TP, undef],
    ['a value with "=": tracestate dropped', ["traceparent: $TP", 'tracestate: a=b=c'], $TP, undef],
    ['UTF-8 in a value: tracestate dropped', ["traceparent: $TP", "tracestate: a=caf\xc3\xa9"], $TP, undef],
    ['two tracestate lines are one list', ["traceparent: $TP", 'tracestate: a=1', 'tracestate: b=2'], $TP, 'a=1,b=2'],
    ['only empty members: not sent', ["traceparent: $TP", 'tracestate: ,  ,'], $TP, undef],
    ['upper-case hex: nothing goes on', ['traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01',
        'tracestate: a=1'], undef, undef],
    ['an all-zero trace-id: nothing goes on', ['traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01',
        'tracestate: a=1'], undef, undef],
    ['an all-zero parent-id: nothing goes on', ['traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
        'tracestate: a=1'], undef, undef],
    ['version ff: nothing goes on', ['traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        'tracestate: a=1'], undef, undef],
    ['version 00 longer than 55: nothing goes on', ["traceparent: $TP-extra", 'tracestate: a=1'], undef, undef],
    ['garbage: nothing goes on', ['traceparent: <script>alert(1)</script>', 'tracestate: a=1'], undef, undef],
    ['traceparent twice: nothing goes on', ["traceparent: $TP", "traceparent: $TP", 'tracestate: a=1'], undef, undef],
    ['no traceparent: no tracestate either', ['tracestate: a=1'], undef, undef],
    ['a later version with more fields goes on unchanged',
        ['traceparent: cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future', 'tracestate: a=1'],
        'cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future', 'a=1'],
);

start_nginx(block_from(name => 'trace context', config => <<'CONF')) or BAIL_OUT('nginx');
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_pass http://idp/introspect; }
CONF

for my $case (@cases) {
    my ($name, $lines, $want_tp, $want_ts) = @$case;
    idp_setup({ t => { json => { active => \1 } } });
    my $r = http_request(raw_request('GET', '/', ['Authorization: Bearer t', @$lines]));
    is($r->{status}, 200, "$name: the request passes");
    my $calls = idp_requests();
    is(scalar @$calls, 1, "$name: one IdP call") or next;
    my %got;
    push @{ $got{ lc $_->[0] } }, $_->[1] for @{ $calls->[0]{headers} };
    is(join("\n", @{ $got{traceparent} // [] }), $want_tp // '', "$name: traceparent at the IdP");
    is(join("\n", @{ $got{tracestate} // [] }), $want_ts // '', "$name: tracestate at the IdP");
}
stop_nginx();

done_testing();
