# Issue 29 item 3: every row of docs/MIGRATION.md's tables, and every
# exception of its section on the C module, has a test of what this module
# does there, and every such test names a row or an exception the guide still
# has. A test names what it checks in its title (or test name) as
# `row [<the row's first cell>]` (any part of it) or `exception [<the
# exception's bold lead>]`, preceded by the table's tag where a section has
# more than one table. No nginx is run here: the behaviour is checked by the
# files named below.
use strict;
use warnings;
use Test::More;

my $guide = $ENV{MIGRATION_GUIDE} // 'docs/MIGRATION.md';

# Section number => [test file, [tag of each table, in order]].
my %covered_by = (
    1 => ['t/193-migration-c-module.t', ['']],
    2 => ['t/195-migration-curity.t', ['']],
    3 => ['t/196-migration-recipes.t', ['recipe']],
    4 => ['t/196-migration-recipes.t', ['njs']],
    5 => ['t/197-migration-acm.t', [qw(fields types client)]],
    # kjdev's nginx-auth-jwt: no table; its configurations load in t/041.
    6 => ['t/041-migration.t', []],
);
my @exception_files = qw(t/191-compat-require-exchange-only.t t/192-compat-require-errors.t
                         t/193-migration-c-module.t);

sub norm {
    my ($text) = @_;
    $text =~ s/[`\\]//g;
    $text =~ s/\*\*//g;
    $text =~ s/\s+/ /g;
    $text =~ s/^ | $//g;
    return lc $text;
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!";
    local $/;
    return scalar <$fh>;
}

# What a test file names: [tag, kind, text] for each "row [..]" and
# "exception [..]" in its titles and test names.
sub named_in {
    my ($file) = @_;
    my @named;
    for my $line (split /\n/, slurp($file)) {
        while ($line =~ /(?:\b(\w+): )?(row|exception) \[(.+?)\]: /g) {
            push @named, [$1 // '', $2, norm($3)];
        }
    }
    return @named;
}

my $text = slurp($guide);
my %sections;
while ($text =~ /^## (\d+)\. [^\n]*\n(.*?)(?=^## \d+\. |\z)/msg) {
    $sections{$1} = $2;
}
is_deeply([sort keys %sections], [sort keys %covered_by], 'the guide has its six sections')
    or diag(join ', ', sort keys %sections);

for my $n (sort keys %covered_by) {
    my ($file, $tags) = @{ $covered_by{$n} };
    my $section = $sections{$n} // next;
    # Tables: runs of lines starting with "|"; the first two lines are the
    # header and the rule.
    my @tables;
    my $current;
    for my $line (split /\n/, $section) {
        if ($line =~ /^\|/) {
            push @tables, ($current = []) unless $current;
            push @$current, $line;
        } else {
            undef $current;
        }
    }
    is(scalar @tables, scalar @$tags, "section $n has " . scalar(@$tags) . ' table(s)');
    my @named = grep { $_->[1] eq 'row' } named_in($file);
    for my $i (0 .. $#tables) {
        my $tag = $tags->[$i] // '?';
        my @rows = map { (split /\s*\|\s*/, $_)[1] } @{ $tables[$i] }[2 .. $#{ $tables[$i] }];
        my @titles = map { $_->[2] } grep { $_->[0] eq $tag || ($tag eq '' && $_->[0] !~ /^(?:recipe|njs|fields|types|client)$/) } @named;
        for my $row (@rows) {
            my $cell = norm($row);
            ok((grep { index($cell, $_) >= 0 } @titles), "section $n" . ($tag ? " ($tag)" : '') . ": row \"$row\" has a test in $file");
        }
        for my $title (@titles) {
            ok((grep { index(norm($_), $title) >= 0 } @rows),
                "section $n" . ($tag ? " ($tag)" : '') . ": the test of row [$title] names a row of the guide");
        }
    }
}

# The C module's exceptions: each bold lead of a paragraph under
# "### Exceptions" in section 1 (any heading ending in "exceptions").
my ($exceptions) = ($sections{1} // '') =~ /^### (?:\w+ )?[Ee]xceptions\n(.*?)(?=^### )/ms;
ok(defined $exceptions, 'section 1 has its "### Exceptions"');
my @leads = map { norm($_) } ($exceptions // '') =~ /^\*\*(.+?)\*\*/msg;
ok(@leads >= 2, 'the exceptions have bold leads') or diag(scalar @leads);
my @named = map { $_->[2] } grep { $_->[1] eq 'exception' } map { named_in($_) } @exception_files;
for my $lead (@leads) {
    ok((grep { index($lead, $_) >= 0 } @named), "exception \"$lead\" has a test");
}
for my $title (@named) {
    ok((grep { index($_, $title) >= 0 } @leads), "the test of exception [$title] names an exception of the guide");
}

done_testing();
