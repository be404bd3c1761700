# Junk tokens do not push another user's answer out of the zone (issue 22,
# item 8). A client sends tokens chosen to land in the victim's chain and
# keeps the IdP busy with them (it never answers them), so every one of them
# leaves a pending mark in the zone while the victim's answer is cached.
#
# The tokens are chosen offline for the bucket hash of the versions before
# the fix (77929ac): the bucket was the token's tag (a fixed, unkeyed
# MurmurHash-style mix of the token, `token_tag` in src/oauth/cache/key.rs)
# masked to the bucket count, so tokens whose tags agree with the victim's
# in the low bits share its chain; the 16th mark in a chain of 16
# (MAX_CHAIN) evicted its oldest node, the victim's answer. Now the bucket
# is a SipHash-1-3 of the tag under a random key kept in the zone, and a
# mark never evicts an answer: the victim is still a HIT, with no new IdP
# call, and nothing was evicted.
#
# Every wait polls a condition with a deadline (the junk calls arriving at
# the IdP); nothing depends on timing.
use strict;
use warnings;
no warnings 'portable';    # 64-bit constants: the hash works on 64-bit integers
use Config;
use lib 't/lib';
use OAuth2Test;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

BAIL_OUT('t/156 needs a perl with 64-bit integers') unless $Config{ivsize} >= 8;

# ---- the old bucket function, offline -----------------------------------------------------------

my $M32 = 0xffff_ffff;

# (a * b) mod 2^64 on 64-bit unsigned integers, in 32-bit halves so that no
# intermediate leaves Perl's exact integers.
sub mul64 {
    my ($x, $y) = @_;
    my ($xh, $xl, $yh, $yl) = ($x >> 32, $x & $M32, $y >> 32, $y & $M32);
    my $lo = $xl * $yl;    # < 2^64
    my $mid = ((($xh * $yl) & $M32) + (($xl * $yh) & $M32) + ($lo >> 32)) & $M32;
    return ($mid << 32) | ($lo & $M32);
}

sub rotl64 { my ($x, $n) = @_; return (($x << $n) | ($x >> (64 - $n))) & 0xffff_ffff_ffff_ffff }

# token_tag of src/oauth/cache/key.rs (unchanged by the fix), as a u64
# (the tag's bytes are this number, little-endian).
sub token_tag {
    my ($token) = @_;
    my $k = 0x9e37_79b9_7f4a_7c15;
    my $h = mul64(length $token, $k);
    for (my $i = 0; $i < length $token; $i += 8) {
        my $word = unpack 'Q<', substr($token . ("\0" x 8), $i, 8);
        $h = rotl64(mul64($h ^ $word, $k), 29);
    }
    $h ^= $h >> 33;
    $h = mul64($h, 0xff51_afd7_ed55_8ccd);
    $h ^= $h >> 33;
    $h = mul64($h, 0xc4ce_b9fe_1a85_ec53);
    $h ^= $h >> 33;
    return $h;
}

# The documented value (key.rs test token_tag_is_the_documented_hash).
is(unpack('H*', pack('Q<', token_tag('tok'))), 'f98a07520570e610', 'the tag function is the module\'s');

# A zone of 64 KiB had 128 buckets before the fix (zone bytes / 512, a power
# of two): the bucket was the tag's low 7 bits.
my $ZONE = '64k';
my $MASK = 127;
my $MAX_CHAIN = 16;
my $JUNK = 24;    # more than enough to fill the chain: the 16th evicted the victim

my $VICTIM = 'victim-0123456789abcdef';
my $bucket = token_tag($VICTIM) & $MASK;
my @junk;
for (my $i = 0; @junk < $JUNK; $i++) {
    my $t = "junk-$i";
    push @junk, $t if (token_tag($t) & $MASK) == $bucket;
}
is(scalar(grep { (token_tag($_) & $MASK) == $bucket } @junk), $JUNK,
    "$JUNK junk tokens share the victim's chain under the old bucket hash");

# ---- the gateway ---------------------------------------------------------------------------------

start_servers();
# The junk calls hang at the IdP until nginx stops: their marks stay pending.
idp_setup({ $VICTIM => { json => { active => \1, sub => 'victim' } },
    map { ($_ => { mode => 'hang' }) } @junk });

my $config = <<'CONF';
location / {
    auth_oauth2_token_introspect on;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_client_id gw;
    add_header X-Cache $oauth2_token_cache_status always;
    proxy_pass http://backend;
}
location = /_introspect { internal; proxy_read_timeout 120s; proxy_pass http://idp/introspect; }
location = /metrics { auth_oauth2_token_metrics; }
CONF
start_nginx(block_from(name => 'junk marks', http_config => "auth_oauth2_token_introspect_cache zone=tokens:$ZONE;",
    config => $config)) or BAIL_OUT('nginx');

sub get {
    my ($token) = @_;
    my $r = http_request(raw_request('GET', '/api', ["Authorization: Bearer $token"]));
    my ($cache) = map { $_->[1] } grep { lc $_->[0] eq 'x-cache' } @{ $r->{headers} };
    return ($r->{status} // 'no answer') . ' ' . ($cache // '-');
}

# IdP calls per token.
sub calls_for {
    my ($token) = @_;
    return scalar grep { ($_->{body} // '') =~ /(?:^|&)token=\Q$token\E(?:&|$)/ } @{ idp_requests() };
}

sub metric {
    my ($name) = @_;
    my $r = http_request(raw_request('GET', '/metrics', []));
    my ($v) = ($r->{body} // '') =~ /^\Q$name\E (\S+)$/m;
    return $v // 'none';
}

is(get($VICTIM), '200 MISS', 'the victim\'s token is asked');
is(get($VICTIM), '200 HIT', 'and its answer is cached');
is(calls_for($VICTIM), 1, 'one IdP call for the victim');

# The junk requests: one connection each, sent and left open (their calls
# hang at the IdP; a client that left would take its mark off).
my @held;
for my $t (@junk) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port(), Proto => 'tcp')
        or die "connect: $!";
    print {$s} raw_request('GET', '/api', ["Authorization: Bearer $t"]);
    push @held, $s;
}
# A call reaches the IdP after its mark is in the zone (claim, then the
# subrequest): once every junk call has arrived, every mark was placed.
my $deadline = time + 10;
my $arrived = 0;
while (time < $deadline) {
    $arrived = grep { calls_for($_) } @junk;
    last if $arrived == $JUNK;
    sleep 0.02;
}
is($arrived, $JUNK, "all $JUNK junk calls are at the IdP (each left a pending mark)");

# Fails before: the 16th mark in the victim's chain evicted the victim's
# answer (MISS, a second IdP call, one eviction).
is(get($VICTIM), '200 HIT', 'the victim is still a HIT');
is(calls_for($VICTIM), 1, 'no new IdP call for the victim');
is(metric('oauth2_token_cache_evictions_total{zone="tokens"}'), 0, 'nothing was evicted');
is(get($VICTIM), '200 HIT', 'and again');

close $_ for @held;
stop_nginx();

done_testing();
