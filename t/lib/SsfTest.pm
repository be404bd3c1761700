package SsfTest;

# The Shared Signals tests' transmitter: Security Event Tokens signed by
# t/oidc/ssf-transmitter.mjs (npm `jose`).

use strict;
use warnings;
use File::Basename qw(dirname);
use File::Temp qw(tempfile);
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

1;
