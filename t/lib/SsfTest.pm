package SsfTest;

# The Shared Signals tests' transmitter: Security Event Tokens signed by
# t/oidc/ssf-transmitter.mjs (npm `jose`).

use strict;
use warnings;
use File::Basename qw(dirname);
use File::Temp qw(tempfile);
use IO::Socket::INET;
use JSON::PP;

my $JSON = JSON::PP->new->canonical;
my $NODE = $ENV{TEST_OIDC_NODE} || 'node';

# Signs each spec ({claims => {...}, header => {...}, ...}, as the
# transmitter reads them) with the private JWK in $keyfile (made on first
# use), writing its public JWK Set to $jwksfile; the SETs, in order.
sub signed {
    my ($keyfile, $jwksfile, @specs) = @_;
    my ($fh, $in) = tempfile('ssf-in-XXXXXX', DIR => dirname($keyfile), SUFFIX => '.json', UNLINK => 1);
    print $fh $JSON->encode({ keyfile => $keyfile, jwksfile => $jwksfile, sets => \@specs });
    close $fh;
    my $out = `$NODE t/oidc/ssf-transmitter.mjs < $in`;
    die "t/oidc/ssf-transmitter.mjs failed: $?" if $?;
    unlink $in;
    return @{ decode_json($out) };
}

# The poll transmitter's control endpoints (t/oidc/ssf-poll-transmitter.mjs
# on $port): one JSON request, its JSON answer (undef when it cannot be
# reached).
sub poll_control {
    my ($port, $method, $path, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
        or return undef;
    $body //= '';
    print $s "$method $path HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    local $/;
    my $r = <$s>;
    my ($json) = $r =~ /\r\n\r\n(.*)\z/s;
    return decode_json($json);
}
# Queues SETs (jti => SET) for the next polls.
sub poll_queue { my ($port, %sets) = @_; poll_control($port, 'POST', '/_queue', $JSON->encode({ sets => \%sets })) }
# What the transmitter saw: its polls and acknowledgements.
sub poll_state { poll_control($_[0], 'GET', '/_state') }

1;
