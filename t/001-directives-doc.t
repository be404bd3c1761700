# DIRECTIVES.md documents exactly the directives and variables the code
# registers, each with syntax, default, context and an example, and its
# metrics table names exactly the metrics src/metrics/ renders.
use strict;
use warnings;
use Test::More;
use File::Find;

my (%code_directives, %code_variables);
find(sub {
    return unless /\.rs$/;
    open my $fh, '<', $_ or die "$File::Find::name: $!";
    my $src = do { local $/; <$fh> };
    $code_directives{$1} = 1 while $src =~ /ngx_string!\("(auth_oauth2_token_[a-z0-9_]+|phantom_token(?:_[a-z_]+)?)"\)/g;
    $code_variables{$1} = 1 while $src =~ /ngx_string!\("(oauth2_token_[a-z0-9_]+)"\)/g;
}, 'src');

ok(scalar(keys %code_directives) >= 6, 'found the directive table in src/');
ok(scalar(keys %code_variables) >= 5, 'found the variable table in src/');

open my $fh, '<', 'DIRECTIVES.md' or die "DIRECTIVES.md: $!";
my $doc = do { local $/; <$fh> };

# Split into "### heading" sections.
my %sections;
while ($doc =~ /^### (\S+)\n(.*?)(?=^### |^## |\z)/msg) {
    $sections{$1} = $2;
}

for my $name (sort keys %code_directives) {
    my $text = $sections{$name};
    ok(defined $text, "$name is documented") or next;
    like($text, qr/^\s+Syntax:\s+\Q$name\E\b/m, "$name has a syntax line");
    like($text, qr/^\s+Default:\s+\S/m, "$name has a default line");
    like($text, qr/^\s+Context:\s+\S/m, "$name has a context line");
    like($text, qr/```nginx\n.*\Q$name\E/s, "$name has an example using it");
}

for my $name (sort keys %code_variables) {
    my $text = $sections{"\$$name"};
    ok(defined $text, "\$$name is documented") or next;
    like($text, qr/```nginx\n.*\$\Q$name\E/s, "\$$name has an example using it");
}

for my $heading (sort keys %sections) {
    (my $name = $heading) =~ s/^\$//;
    ok($code_directives{$name} || $code_variables{$name},
       "documented $heading exists in the code");
}

# The metrics: each name the page can show (a string literal in the code of
# src/metrics/, before its tests) is a row of the table, and the reverse.
my %code_metrics;
find(sub {
    return unless /\.rs$/;
    open my $fh, '<', $_ or die "$File::Find::name: $!";
    my $src = do { local $/; <$fh> };
    $src =~ s/^#\[cfg\(test\)\].*//ms;
    $code_metrics{$1} = 1 while $src =~ /"(oauth2_token_[a-z0-9_]+)"/g;
}, 'src/metrics');
my %doc_metrics = map { $_ => 1 } $doc =~ /^\| `(oauth2_token_[a-z0-9_]+)` \|/mg;
ok(scalar(keys %code_metrics) >= 10, 'found the metric names in src/metrics/');
for my $name (sort keys %code_metrics) {
    ok($doc_metrics{$name}, "metric $name is in DIRECTIVES.md's table");
}
for my $name (sort keys %doc_metrics) {
    ok($code_metrics{$name}, "documented metric $name exists in the code");
}

done_testing();
