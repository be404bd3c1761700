# The source layout rules checked by scripts/check-layout.pl: no plain file
# (src/oauth/, src/conf/, src/resilience/ and the plain files of src/redis/)
# refers to nginx, ARCHITECTURE.md names exactly the files of src/,
# no file of src/ imports itself back through other files, no file has
# more than 600 lines before its tests, and redis/ and shm/ import nothing
# from handler/ or pages/. The script is
# first run on small fake trees that break each rule once, so that a check
# which silently stopped finding anything fails here too.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use File::Basename qw(dirname);

my $SCRIPT = 'scripts/check-layout.pl';

sub run_check {
    my @root = @_;
    my $out = qx{"$^X" $SCRIPT @root 2>&1};
    return ($? >> 8, $out);
}

# A fake repository root holding %files (path => text).
sub fake_tree {
    my %files = @_;
    my $root = tempdir(CLEANUP => 1);
    for my $path (sort keys %files) {
        make_path(dirname("$root/$path"));
        open my $fh, '>', "$root/$path" or die "$root/$path: $!";
        print $fh $files{$path};
        close $fh or die "$root/$path: $!";
    }
    return $root;
}

# A clean tree with the traps a naive checker falls into: nginx names in
# comments and after a "//" inside a string, a quote character literal, a child
# re-exported by its parent whose tests `use super::*` (that super is the file
# itself, not the parent), grouped and inline crate:: paths, and paths outside
# src/ in ARCHITECTURE.md.
my %clean = (
    'build.rs' => "fn main() {}\n",
    'src/lib.rs' => "pub mod conf;\npub mod oauth;\n",
    'src/oauth/mod.rs' => "//! Plain Rust: no ngx:: and no NGX_OK below this folder.\npub mod a;\npub mod cache;\n",
    'src/oauth/a.rs' => <<'RUST',
/// Only a doc comment mentions ngx_http_request_t.
pub const URL: &str = "http://idp.example/ngx"; // ngx::ffi in a trailing comment
pub const QUOTE: u8 = b'"'; // NGX_OK after a quote character
/* a block comment: nginx_sys::ngx_str_t */
pub fn f() -> u32 {
    crate::oauth::cache::key::k()
}
RUST
    'src/oauth/cache/mod.rs' => "pub mod key;\n\npub use key::k;\n",
    'src/oauth/cache/key.rs' => <<'RUST',
pub fn k() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one() {
        assert_eq!(k(), 1);
    }
}
RUST
    'src/conf/mod.rs' => "pub mod directives;\n\npub fn parse() {}\n",
    'src/conf/directives.rs' => <<'RUST',
use super::parse;
use crate::oauth::{
    a,
    cache::{key::{self}},
};

pub fn run() -> u32 {
    parse();
    a::f() + key::k()
}
RUST
    'ARCHITECTURE.md' => <<'MD',
# Architecture

- `lib.rs` registers the module; `build.rs` (at the root) finds nginx.
- `oauth/mod.rs`, `oauth/a.rs`, oauth/cache/mod.rs and `oauth/cache/key.rs`: plain logic.
- `conf/mod.rs` and `conf/directives.rs`: configuration.
- Benchmarks in `benches/micro.rs`, fuzzing in `fuzz/fuzz_targets/form.rs`, tests in `t/x.rs`.
MD
);

# ---- the check finds what it should -----------------------------------------------

{
    my ($rc, $out) = run_check(fake_tree(%clean));
    is($rc, 0, 'clean fake tree passes') or diag($out);
    like($out, qr/\Alayout: ok \(7 files\)\n\z/, 'clean fake tree: one summary line only');
}

{
    my $root = fake_tree(%clean, 'src/oauth/a.rs' => $clean{'src/oauth/a.rs'}
        . "use ngx::ffi::ngx_str_t;\npub fn u() -> &'static str { \"http://x\" } pub const E: i32 = NGX_ERROR;\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 1: an oauth file using ngx::ffi fails');
    like($out, qr{^nginx in oauth/: oauth/a\.rs:8: .*`ngx::`}m, 'rule 1: the ngx:: use is reported with its line');
    like($out, qr{^nginx in oauth/: oauth/a\.rs:9: .*`NGX_`}m, 'rule 1: code after a "//" inside a string is still checked');
    unlike($out, qr{oauth/a\.rs:[1-7]:}, 'rule 1: comments and strings before it are not reported');
}

{
    my $root = fake_tree(%clean, 'src/conf/mod.rs' => $clean{'src/conf/mod.rs'}
        . "// an ngx_shm_zone_t, opaque here\npub struct Z(pub *mut ngx::ffi::ngx_shm_zone_t);\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 1: a conf file using an nginx type fails');
    like($out, qr{^nginx in conf/: conf/mod\.rs:5: .*`ngx::`}m, 'rule 1: reported for conf/ with its line');
    unlike($out, qr{conf/mod\.rs:4:}, 'rule 1: a comment naming an nginx type is not reported');
}

{
    my $root = fake_tree(%clean,
        'src/lib.rs' => $clean{'src/lib.rs'} . "pub mod redis;\npub mod resilience;\n",
        'src/redis/mod.rs' => "pub mod call;\npub mod resp;\n",
        'src/redis/resp.rs' => "pub fn parse() {}\npub const E: i32 = nginx_sys::NGX_ERROR;\n",
        'src/redis/call.rs' => "use ngx::ffi::ngx_http_request_t;\n",
        'src/resilience/mod.rs' => "// a log gate\npub struct Gate(pub *mut ngx_log_t);\n",
        'ARCHITECTURE.md' => $clean{'ARCHITECTURE.md'}
            . "- `redis/mod.rs`, `redis/call.rs`, `redis/resp.rs` and `resilience/mod.rs`.\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 1: a plain file beside the Redis glue using nginx fails');
    like($out, qr{^nginx in redis/resp\.rs: redis/resp\.rs:2: .*`nginx_sys`}m, 'rule 1: reported for redis/resp.rs with its line');
    like($out, qr{^nginx in resilience/: resilience/mod\.rs:2: .*`ngx_`}m, 'rule 1: reported for resilience/');
    unlike($out, qr{in `.*\bngx::ffi::ngx_http_request_t}, 'rule 1: the Redis glue may use nginx');
    like($out, qr{^check-layout\.pl lists redis/fleet\.rs as plain, but src/redis/fleet\.rs does not exist}m,
        'rule 1: a plain file that is no longer there is reported');
}

{
    my $root = fake_tree(%clean,
        'src/oauth/mod.rs' => $clean{'src/oauth/mod.rs'} . "pub mod b;\n",
        'src/oauth/b.rs' => "pub fn b() {}\n",
        'ARCHITECTURE.md' => $clean{'ARCHITECTURE.md'} . "- `handler/gone.rs` was removed.\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 2: an unnamed file fails');
    like($out, qr{^ARCHITECTURE\.md does not name oauth/b\.rs}m, 'rule 2: the unnamed file is reported');
    like($out, qr{^ARCHITECTURE\.md:\d+ names handler/gone\.rs, which does not exist}m, 'rule 2: a stale name is reported');
    unlike($out, qr{build\.rs|benches/|fuzz/|t/x\.rs}, 'rule 2: paths outside src/ are not reported');
}

{
    my %tree = %clean;
    delete $tree{'ARCHITECTURE.md'};
    my ($rc, $out) = run_check(fake_tree(%tree));
    isnt($rc, 0, 'rule 2: a missing ARCHITECTURE.md fails');
    like($out, qr{^ARCHITECTURE\.md: cannot read}m, 'rule 2: the missing file is reported');
}

{
    my $root = fake_tree(%clean,
        'src/lib.rs' => $clean{'src/lib.rs'} . "pub mod x;\npub mod y;\n",
        'src/x.rs' => "use crate::y::{\n    self,\n    Y,\n};\n\npub struct X(pub Y);\n",
        'src/y.rs' => "pub use crate::x::X;\n\npub struct Y;\n",
        'ARCHITECTURE.md' => $clean{'ARCHITECTURE.md'} . "- `x.rs` and `y.rs`.\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 3: a two-file cycle through use crate:: fails');
    like($out, qr{^import cycle: x\.rs -> y\.rs -> x\.rs}m, 'rule 3: the use crate:: cycle is reported');
}

{
    my $root = fake_tree(%clean,
        'src/conf/mod.rs' => "pub mod directives;\n\nuse self::directives::run;\n\npub fn parse() {}\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 3: a cycle through super:: fails');
    like($out, qr{^import cycle: conf/directives\.rs -> conf/mod\.rs -> conf/directives\.rs}m,
        'rule 3: the super:: cycle is reported');
}

{
    my $root = fake_tree(%clean,
        'src/oauth/cache/key.rs' => "pub fn k() -> u32 {\n    crate::conf::directives::run()\n}\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 3: a cycle through an inline crate:: path fails');
    like($out, qr{^import cycle: conf/directives\.rs -> oauth/cache/key\.rs -> conf/directives\.rs}m,
        'rule 3: the inline-path cycle is reported');
}

# ---- rule 4: files of one idea -------------------------------------------------------

# $n lines of Rust, one item each.
sub rust_lines {
    my ($n) = @_;
    return join '', map { "pub const C$_: u32 = $_;\n" } 1 .. $n;
}
my $TESTS = "#[cfg(test)]\nmod tests {\n" . ("    // a line of the tests\n" x 700) . "}\n";
my $a_lines = () = $clean{'src/oauth/a.rs'} =~ /\n/g;

{
    my $root = fake_tree(%clean, 'src/oauth/a.rs' => $clean{'src/oauth/a.rs'} . rust_lines(600 - $a_lines) . $TESTS);
    my ($rc, $out) = run_check($root);
    is($rc, 0, 'rule 4: 600 lines before a long test module pass') or diag($out);
}

{
    my $root = fake_tree(%clean, 'src/oauth/a.rs' => $clean{'src/oauth/a.rs'} . rust_lines(601 - $a_lines) . $TESTS);
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 4: 601 lines before the tests fail');
    like($out, qr{^too long: oauth/a\.rs has 601 lines before its tests}m, 'rule 4: the file and its length are reported');
}

{
    my $root = fake_tree(%clean, 'src/oauth/a.rs' => "#[cfg(test)]\nuse std::fmt;\n// #[cfg(test)]\n/* #[cfg(test)]\nmod x; */\n"
        . $clean{'src/oauth/a.rs'} . rust_lines(600));
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 4: a #[cfg(test)] use, or one in a comment, does not end the count');
    like($out, qr{^too long: oauth/a\.rs has \d+ lines before its tests}m, 'rule 4: the whole file is counted');
}

# The first file of the script's list of files that were long when the rule came.
my ($long_file, $recorded) = do {
    open my $fh, '<', $SCRIPT or die "$SCRIPT: $!";
    local $/;
    <$fh> =~ /%LONG_FILES = \(\s*'([^']+)'\s*=>\s*(\d+)/;
};
SKIP: {
    skip 'the list of long files is empty', 5 unless defined $long_file;
    my %tree = (%clean, 'ARCHITECTURE.md' => $clean{'ARCHITECTURE.md'} . "- `$long_file`.\n");
    my ($rc, $out) = run_check(fake_tree(%tree, "src/$long_file" => rust_lines($recorded) . $TESTS));
    is($rc, 0, "rule 4: $long_file may keep its $recorded lines") or diag($out);

    ($rc, $out) = run_check(fake_tree(%tree, "src/$long_file" => rust_lines($recorded + 1)));
    isnt($rc, 0, "rule 4: $long_file may not grow");
    like($out, qr{^too long: \Q$long_file\E has \d+ lines before its tests, more than the $recorded}m, 'rule 4: the growth is reported');

    ($rc, $out) = run_check(fake_tree(%tree, "src/$long_file" => rust_lines(600)));
    isnt($rc, 0, "rule 4: $long_file back within the limit must leave the list");
    like($out, qr{^long-file list: \Q$long_file\E has 600 lines .* remove it}m, 'rule 4: the stale entry is reported');
}

# ---- rule 5: no upward arrow -------------------------------------------------------

{
    my $root = fake_tree(%clean,
        'src/lib.rs' => $clean{'src/lib.rs'} . "pub mod handler;\npub mod pages;\npub mod redis;\n",
        'src/handler/mod.rs' => "pub fn run() {\n    crate::redis::call();\n}\n",
        'src/pages/mod.rs' => "pub fn revoked() {}\n",
        'src/redis/mod.rs' => "pub fn call() {}\n\npub fn message() {\n    crate::pages::revoked();\n}\n",
        'ARCHITECTURE.md' => $clean{'ARCHITECTURE.md'}
            . "- `handler/mod.rs`, `pages/mod.rs` and `redis/mod.rs`.\n");
    my ($rc, $out) = run_check($root);
    isnt($rc, 0, 'rule 5: redis/ calling up into pages/ fails, though it makes no cycle');
    like($out, qr{^upward import: redis/mod\.rs -> pages/mod\.rs \(redis/mod\.rs:4 crate::pages::revoked\)}m,
        'rule 5: the upward arrow is reported with its line');
    unlike($out, qr{import cycle|handler/mod\.rs ->}, 'rule 5: downward arrows are fine');
}

# ---- the real tree ------------------------------------------------------------------

{
    my ($rc, $out) = run_check();
    is($rc, 0, 'src/ follows the layout rules') or diag($out);
    like($out, qr/\Alayout: ok \(\d+ files\)\n\z/, 'the real tree prints only the summary') if $rc == 0;
}

done_testing();
