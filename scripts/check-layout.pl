#!/usr/bin/env perl
# check-layout.pl [ROOT] -- checks the source layout rules of the module.
#
#   1. The plain files never refer to nginx: no `ngx::`, `ngx_`, `nginx_sys`
#      or `NGX_` outside comments (string literals count). Plain are every
#      file under src/oauth/, src/conf/, src/resilience/ and src/shm/table/, and the files
#      of the glue folders listed in @PLAIN_FILES (the Redis protocol, the
#      Redis tier's crypto and decisions, beside the Redis glue; the shared
#      table, beside the zone and counters glue that put it in nginx's
#      shared memory).
#   2. ARCHITECTURE.md names every .rs file under src/ by its path relative
#      to src/ (`handler/flow.rs`, `lib.rs`), and names no src/ path that
#      does not exist.
#   3. No import cycle between the files of src/. An edge A -> B is any path
#      in A that reaches B: `use crate::...` (grouped, nested, multi-line,
#      `pub use`), `super::...`, `self::...`, a path through one of A's own
#      child modules (`pub use entry::X`), a path through a module name bound
#      by a `use` (`conf::directives::X` after `use crate::conf::{self}`),
#      and the same paths written inline in code (`crate::oauth::claims::f()`).
#      `mod x;` itself is not an edge. A path resolves to the deepest file
#      that exists: crate::a::b::C tries a/b/C.rs, a/b/C/mod.rs, a/b.rs,
#      a/b/mod.rs, a.rs, a/mod.rs, then lib.rs. Inline modules (`mod tests
#      { use super::*; }`) are tracked, so `super::` inside them is the file
#      itself, not its parent.
#   4. Files of one idea: no .rs file under src/ has more than 600 lines
#      before its tests (the `#[cfg(test)]` that opens its test module; a
#      `#[cfg(test)]` on a single `use` or function does not end the count).
#      The files of %LONG_FILES were longer when this rule came: each may not
#      grow past its recorded length, and leaves the list once it is within
#      the limit (see below).
#   5. No upward arrow: no file under src/redis/ or src/shm/ imports one
#      under src/handler/ or src/pages/ (edges as in rule 3).
#
# ROOT defaults to the repository this script lives in. Prints one line
# "layout: ok (N files)" and exits 0 when every rule holds; otherwise prints
# one line per violation on stderr and exits 1 (2 on a usage error).
use v5.36;
use File::Find ();
use File::Spec;
use FindBin ();

# Rule 4. The limit, and the files that were over it when the rule came
# (2026-12, at 77929ac), each with its length then (lines before its tests).
# None belonged to the change that added the rule: the handler rewrite owns
# handler/, and the table and the metrics catalogue are split on their own.
# An entry only keeps its file from growing; the list only shrinks: a file
# back within the limit must leave it (the check says so), a file that is
# gone is not checked, and no entry is added or raised. Split a file that
# outgrows the limit instead.
my $MAX_LINES = 600;
my %LONG_FILES = (
    'shm/table.rs'        => 799,    # the cache table
);

my $root = @ARGV ? shift @ARGV : File::Spec->catdir($FindBin::RealBin, File::Spec->updir);
die "usage: $0 [ROOT]\n" if @ARGV;
my $src = "$root/src";
unless (-d $src) {
    print STDERR "layout: no src/ directory under $root\n";
    exit 2;
}

# ---- the files ------------------------------------------------------------------

my @files;    # paths relative to src/, sorted
File::Find::find({ no_chdir => 1, wanted => sub {
    return unless -f $_ && /\.rs\z/;
    push @files, File::Spec->abs2rel($_, $src);
} }, $src);
@files = sort @files;
my %is_file = map { $_ => 1 } @files;
my $crate_root = $is_file{'lib.rs'} ? 'lib.rs' : $is_file{'main.rs'} ? 'main.rs' : 'lib.rs';

my (%keep_strings, %no_strings);    # per file: comments blanked / comments and literals blanked
for my $f (@files) {
    open my $fh, '<:encoding(UTF-8)', "$src/$f" or die "src/$f: $!\n";
    my $text = do { local $/; <$fh> };
    ($keep_strings{$f}, $no_strings{$f}) = lex($text);
}

my @violations;

# ---- rule 1: no nginx in the plain files ------------------------------------------------

my @PLAIN_DIRS = qw(oauth conf resilience shm/table);
my @PLAIN_FILES = qw(redis/failure.rs redis/fleet.rs redis/purge.rs redis/replay.rs redis/resp.rs redis/ssf_tell.rs redis/subscription.rs
  redis/tier_read.rs redis/write.rs
  shm/table.rs);
my %plain_file = map { $_ => 1 } @PLAIN_FILES;
my $plain_dir = join '|', map { quotemeta } @PLAIN_DIRS;

# A listed file that was renamed would silently go unchecked.
for my $f (grep { !$is_file{$_} && -d "$src/" . ($_ =~ s{/[^/]*\z}{}r) } @PLAIN_FILES) {
    push @violations, "check-layout.pl lists $f as plain, but src/$f does not exist";
}

for my $f (grep { m{\A(?:$plain_dir)/} || $plain_file{$_} } @files) {
    my $where = $plain_file{$f} ? $f : ($f =~ s{/.*}{}r) . '/';
    my $n = 0;
    for my $line (split /\n/, $keep_strings{$f}, -1) {
        $n++;
        my @hits = grep { index($line, $_) >= 0 } qw(ngx:: ngx_ nginx_sys NGX_);
        next unless @hits;
        (my $shown = $line) =~ s/^\s+|\s+$//g;
        push @violations, sprintf "nginx in %s: %s:%d: %s in `%s`",
            $where, $f, $n, join(', ', map { "`$_`" } @hits), $shown;
    }
}

# ---- rule 2: ARCHITECTURE.md names exactly the files -----------------------------------

if (open my $fh, '<:encoding(UTF-8)', "$root/ARCHITECTURE.md") {
    my $doc = do { local $/; <$fh> };
    my %top_dirs = map { $_ => 1 } grep { $_ ne 'src' } map { s{.*/}{}r } grep { -d } glob("$root/*");
    $top_dirs{$_} = 1 for qw(benches fuzz t scripts);
    my %named;
    my $n = 0;
    for my $line (split /\n/, $doc, -1) {
        $n++;
        while ($line =~ m{(?<![A-Za-z0-9_./\-])([a-z0-9_][a-z0-9_/]*\.rs)(?![A-Za-z0-9_])}g) {
            my $path = $1;
            $path =~ s{\Asrc/}{};
            if ($path =~ m{\A([^/]+)/}) {
                next if $top_dirs{$1};           # benches/..., fuzz/..., t/..., bench/...
            } else {
                next if $path eq 'mod.rs';          # "each folder's mod.rs"
                next if !$is_file{$path} && -f "$root/$path";   # build.rs at the root
            }
            $named{$path} //= $n;
            push @violations, "ARCHITECTURE.md:$n names $path, which does not exist under src/"
                unless $is_file{$path};
        }
    }
    push @violations, "ARCHITECTURE.md does not name $_ (src/$_)" for grep { !exists $named{$_} } @files;
} else {
    push @violations, sprintf "ARCHITECTURE.md: cannot read %s/ARCHITECTURE.md (%s); it must name all %d .rs files under src/",
        $root, $!, scalar @files;
}

# ---- rule 3: no import cycle -------------------------------------------------------------

my %edges;    # from => { to => "evidence" }
for my $f (@files) {
    my $code = $no_strings{$f};
    my @file_mod = file_module($f);
    my ($context_at, $children) = inline_modules($code);
    my %bound;    # context key => { name => [absolute module path] }

    my $add = sub ($offset, $segs) {
        my $ctx = $context_at->($offset);
        my @ctx = (@file_mod, @$ctx);
        my $key = join '::', @$ctx;
        my @s = @$segs;
        pop @s if @s > 1 && $s[-1] eq 'self';
        my $first = shift @s;
        my @base;
        if ($first eq 'crate' || $first eq '$crate') {
            @base = ();
        } elsif ($first eq 'self') {
            @base = @ctx;
        } elsif ($first eq 'super') {
            return unless @ctx;
            @base = @ctx[0 .. $#ctx - 1];
            while (@s && $s[0] eq 'super') { shift @s; return unless @base; pop @base }
        } elsif ($children->{$key}{$first}) {
            @base = (@ctx, $first);
        } elsif (my $b = $bound{$key}{$first}) {
            @base = @$b;
        } else {
            return;    # std::, ngx::, an item, a local name
        }
        my @abs = (@base, @s);
        my $to = resolve(@abs);
        return ($key, \@abs) if $to eq $f;
        my $line = 1 + (substr($code, 0, $offset) =~ tr/\n//);
        $edges{$f}{$to} //= "$f:$line " . (join("::", @$segs) =~ s{::self\z}{}r);
        return ($key, \@abs);
    };

    # use declarations, then the rest of the code with them blanked out.
    my $rest = $code;
    while ($code =~ /(?<![\w:\$])use\b/g) {
        my $start = $-[0];
        my $body_start = pos($code);
        my $depth = 0;
        my $i = $body_start;
        for (; $i < length $code; $i++) {
            my $c = substr($code, $i, 1);
            $depth++ if $c eq '{';
            $depth-- if $c eq '}';
            last if $c eq ';' && $depth <= 0;
            last if $depth < 0;
        }
        my $body = substr($code, $body_start, $i - $body_start);
        for my $leaf (use_tree($body)) {
            my ($segs, $name) = @$leaf;
            next unless @$segs;
            my ($key, $abs) = $add->($body_start, $segs);
            $bound{$key}{$name} = $abs if defined $key && defined $name && $name ne '_' && $name ne '*';
        }
        substr($rest, $start, $i - $start) = blank(substr($code, $start, $i - $start));
        pos($code) = $i;
    }
    while ($rest =~ /(?<![\w:\$.'])(\$crate|(?:r#)?[A-Za-z_]\w*)((?:\s*::\s*(?:r#)?[A-Za-z_]\w*)+)/g) {
        my ($head, $tail, $at) = ($1, $2, $-[0]);
        next if substr($rest, $at < 16 ? 0 : $at - 16, $at < 16 ? $at : 16) =~ /\bin\s*\z/;    # pub(in crate::x) is a visibility
        my @segs = ($head, grep { length } split /\s*::\s*/, $tail);
        s/\Ar#// for @segs;
        $add->($at, \@segs);
    }
}

my @cycles = find_cycles(\%edges);
for my $cycle (@cycles) {
    my @ev = map { $edges{ $cycle->[$_] }{ $cycle->[ $_ + 1 ] } } 0 .. $#$cycle - 1;
    push @violations, sprintf "import cycle: %s  (%s)", join(' -> ', @$cycle), join('; ', @ev);
}

# ---- rule 4: files of one idea -----------------------------------------------------------

for my $f (@files) {
    my $n = lines_before_tests($no_strings{$f});
    my $recorded = $LONG_FILES{$f};
    if (!defined $recorded) {
        push @violations, "too long: $f has $n lines before its tests, more than $MAX_LINES: split it into files of one idea"
            if $n > $MAX_LINES;
    } elsif ($n <= $MAX_LINES) {
        push @violations, "long-file list: $f has $n lines before its tests, within the limit of $MAX_LINES: remove it from %LONG_FILES in scripts/check-layout.pl";
    } elsif ($n > $recorded) {
        push @violations, "too long: $f has $n lines before its tests, more than the $recorded it had when the limit of $MAX_LINES came (%LONG_FILES): split it into files of one idea";
    }
}

# ---- rule 5: no upward arrow ------------------------------------------------------------

for my $f (grep { m{\A(?:redis|shm)/} } sort keys %edges) {
    for my $to (grep { m{\A(?:handler|pages)/} } sort keys %{ $edges{$f} }) {
        push @violations, "upward import: $f -> $to ($edges{$f}{$to}): redis/ and shm/ import nothing from handler/ or pages/";
    }
}

# ---- report ----------------------------------------------------------------------

if (@violations) {
    print STDERR "$_\n" for @violations;
    printf STDERR "layout: %d violation%s (%d files)\n", scalar @violations, @violations == 1 ? '' : 's', scalar @files;
    exit 1;
}
printf "layout: ok (%d files)\n", scalar @files;
exit 0;

# ---- helpers ----------------------------------------------------------------------

sub blank ($s) { $s =~ s/[^\n]/ /gr }

# Returns the text with comments blanked (literals kept) and with comments
# and literals blanked; both keep every offset and line of the original.
sub lex ($text) {
    my ($keep, $none) = ('', '');
    my $len = length $text;
    pos($text) = 0;
    while (pos($text) < $len) {
        my $start = pos($text);
        my $kind;
        if ($text =~ /\G\/\/[^\n]*/gc) {                       # //, ///, //!
            $kind = 'comment';
        } elsif ($text =~ /\G\/\*/gc) {                        # /* */, nested
            my $depth = 1;
            while ($depth && $text =~ /\G.*?(\/\*|\*\/)/sgc) { $depth += $1 eq '/*' ? 1 : -1 }
            pos($text) = $len if $depth;
            $kind = 'comment';
        } elsif ($text =~ /\G[bc]?r(#*)"/gc) {                   # r"..", r#".."#, br#".."#
            my $hashes = $1;
            $text =~ /\G.*?"\Q$hashes\E/sgc or pos($text) = $len;
            $kind = 'literal';
        } elsif ($text =~ /\G[bc]?"/gc) {                        # "..", b"..", c".."
            $text =~ /\G(?:[^"\\]|\\.)*"/sgc or pos($text) = $len;
            $kind = 'literal';
        } elsif ($text =~ /\Gb?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]*\}|.)|[^\\'\n])'/gc) {
            $kind = 'literal';                                  # 'x', b'"', '\''
        } elsif ($text =~ /\G(?:r#)?[A-Za-z_]\w*/gc || $text =~ /\G./sgc) {
            $kind = 'code';                                     # whole identifiers, so r" and b' only start a literal
        }
        my $piece = substr($text, $start, pos($text) - $start);
        $keep .= $kind eq 'comment' ? blank($piece) : $piece;
        $none .= $kind eq 'code' ? $piece : blank($piece);
    }
    return ($keep, $none);
}

# Lines before a file's tests: before the `#[cfg(test)]` that opens a module
# (further attributes may follow it), else all of them. The text has its
# comments and literals blanked, so neither can end the count.
sub lines_before_tests ($code) {
    if ($code =~ /^[ \t]*\#\[cfg\(test\)\]\s*(?:\#\[[^\]\n]*\]\s*)*(?:pub(?:\([^)\n]*\))?\s+)?mod\s/m) {
        return substr($code, 0, $-[0]) =~ tr/\n//;
    }
    my $n = $code =~ tr/\n//;
    $n++ if length $code && substr($code, -1) ne "\n";
    return $n;
}

# The module path of a file: lib.rs => (), conf/mod.rs => (conf),
# conf/directives.rs => (conf, directives).
sub file_module ($f) {
    return () if $f eq $crate_root;
    my @p = split m{/}, $f;
    $p[-1] =~ s/\.rs\z//;
    pop @p if $p[-1] eq 'mod';
    return @p;
}

# Deepest existing file for an absolute module path.
sub resolve (@abs) {
    for (my $k = @abs; $k >= 1; $k--) {
        my $p = join '/', @abs[0 .. $k - 1];
        return "$p.rs" if $is_file{"$p.rs"};
        return "$p/mod.rs" if $is_file{"$p/mod.rs"};
    }
    return $crate_root;
}

# Inline modules of a file: returns a function from offset to the inline
# module path there (e.g. ['tests']), and the child modules declared in each
# (by inline path joined with ::; '' is the file's own module).
sub inline_modules ($code) {
    my (@stack, @spans, %children);
    my $path = sub { [ grep { defined } map { $_->[0] } @stack ] };
    while ($code =~ /(?<![\w:])mod\s+(?:r#)?([A-Za-z_]\w*)\s*([;{])|([{}])/g) {
        if (defined $1) {
            $children{ join '::', @{ $path->() } }{$1} = 1;
            push @stack, [$1, pos($code)] if $2 eq '{';
        } elsif ($3 eq '{') {
            push @stack, [undef, pos($code)];
        } elsif (my $open = pop @stack) {
            push @spans, [$open->[1], pos($code), [ @{ $path->() }, $open->[0] ]] if defined $open->[0];
        }
    }
    push @spans, [$_->[1], length $code, [ @{ $path->() } ]] for grep { defined $_->[0] } @stack;   # unclosed
    my $at = sub ($offset) {
        my $best = [];
        my $best_start = -1;
        for my $s (@spans) {
            next unless $s->[0] <= $offset && $offset < $s->[1] && $s->[0] > $best_start;
            ($best, $best_start) = ($s->[2], $s->[0]);
        }
        return $best;
    };
    return ($at, \%children);
}

# The leaves of a use tree, each [\@segments, bound name or undef].
# "crate::a::{self, b::C as D, e::*}" => crate::a (a), crate::a::b::C (D), crate::a::e (undef).
sub use_tree ($body) {
    my @tok = $body =~ /(::|[{},*]|(?:r#)?[A-Za-z_\$][\w\$]*)/g;
    s/\Ar#// for @tok;
    my $i = 0;
    my @leaves;
    my $tree;
    $tree = sub (@prefix) {
        my @seg = @prefix;
        if (@tok > $i && $tok[$i] eq '::') {      # ::ngx::... is an extern crate path
            return if !@prefix;
            $i++;
        }
        while ($i < @tok) {
            my $t = $tok[$i];
            if ($t eq '{') {
                $i++;
                while ($i < @tok && $tok[$i] ne '}') {
                    if ($tok[$i] eq ',') { $i++; next }
                    my $before = $i;
                    $tree->(@seg);
                    $i++ if $i == $before;    # never stall on a token we do not understand
                }
                $i++;
                return;
            }
            if ($t eq '*') { $i++; push @leaves, [[@seg], '*']; return }
            return if $t eq ',' || $t eq '}' || $t eq '::';
            push @seg, $t;
            $i++;
            if ($i < @tok && $tok[$i] eq '::') { $i++; next }
            my $name = $t eq 'self' ? (@seg > 1 ? $seg[-2] : undef) : $t;
            if ($i + 1 < @tok && $tok[$i] eq 'as') { $name = $tok[ $i + 1 ]; $i += 2 }
            push @leaves, [[@seg], $name];
            return;
        }
        push @leaves, [[@seg], undef] if @seg > @prefix;
    };
    while ($i < @tok) {
        my $before = $i;
        $tree->();
        $i++ if $i == $before;
    }
    return @leaves;
}

# Every edge that lies on a cycle, reported as the shortest cycle through it;
# each cycle once, starting from its alphabetically first file.
sub find_cycles ($g) {
    my @nodes = sort keys %{ { map { ($_ => 1, map { $_ => 1 } keys %{ $g->{$_} }) } keys %$g } };
    # Tarjan's strongly connected components.
    my ($index, %idx, %low, %on, @st, %comp) = (0);
    my $strong;
    $strong = sub ($v) {
        $idx{$v} = $low{$v} = $index++;
        push @st, $v;
        $on{$v} = 1;
        for my $w (sort keys %{ $g->{$v} // {} }) {
            if (!exists $idx{$w}) { $strong->($w); $low{$v} = $low{$w} if $low{$w} < $low{$v} }
            elsif ($on{$w}) { $low{$v} = $idx{$w} if $idx{$w} < $low{$v} }
        }
        if ($low{$v} == $idx{$v}) {
            while (1) { my $w = pop @st; $on{$w} = 0; $comp{$w} = $v; last if $w eq $v }
        }
    };
    for my $v (@nodes) { $strong->($v) unless exists $idx{$v} }

    my (%seen, @out);
    for my $u (@nodes) {
        for my $v (sort keys %{ $g->{$u} // {} }) {
            next unless $comp{$u} eq $comp{$v};
            # shortest path v ~> u inside the component
            my %prev = ($v => undef);
            my @queue = ($v);
            while (@queue && !exists $prev{$u}) {
                my $x = shift @queue;
                for my $y (sort keys %{ $g->{$x} // {} }) {
                    next if exists $prev{$y} || $comp{$y} ne $comp{$u};
                    $prev{$y} = $x;
                    push @queue, $y;
                }
            }
            my @path = ($u);
            for (my $x = $u; defined $x && $x ne $v; $x = $prev{$x}) { unshift @path, $prev{$x} }
            my @cycle = ($u, @path);    # u -> v -> ... -> u
            pop @cycle;
            my ($min) = sort { $cycle[$a] cmp $cycle[$b] } 0 .. $#cycle;
            @cycle = (@cycle[$min .. $#cycle], @cycle[0 .. $min - 1]);
            push @cycle, $cycle[0];
            push @out, \@cycle unless $seen{ join ' ', @cycle }++;
        }
    }
    return sort { @$a <=> @$b or "@$a" cmp "@$b" } @out;
}
