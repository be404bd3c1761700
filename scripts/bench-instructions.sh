#!/usr/bin/env bash
# The gateway worker's CPU instructions per request, counted by valgrind's
# callgrind, for bench.sh's scenarios plus a cached phantom token (and the
# shared tier's hit, scenario 10, with a local redis-server, and 10c, the
# same through a Redis Cluster of three primaries, by a third gateway).
#
# Why: wrk's requests/s on this 2-core machine swing by 10-20% from run to
# run, too much to see a change of a few percent. The number of instructions
# a request costs does not depend on the machine's load and repeats to well
# under 1%, so it shows what a code change costs. It is not a time: cache
# misses, syscalls and the kernel's share are not in it. One skew: valgrind
# hides SHA-NI from CPUID, so SHA-256 (the Redis tier's HMAC names, scenario
# 10) runs OpenSSL's vector code here (~2,000 instructions a 64-byte block),
# far more than on a CPU with SHA-NI. (Zone keys are SipHash, no skew.)
#
# How: two gateways run under callgrind as one process each (daemon off,
# master_process off), one without the module (scenarios 1, 8a, 8b) and one
# with it; a normal nginx plays IdP and backend, as in bench.sh. The
# gateways start with instrumentation off, so startup, config parsing and
# the cache fill of scenario 4 (~30s for 100000 tokens) run several times
# faster than instrumented code. For each scenario a client sends
# INSTR_WARMUP requests, switches instrumentation on and zeroes the counters
# (callgrind_control -i on, -z), sends INSTR_REQUESTS sequential requests
# over the same keep-alive connection, and dumps the counters
# (callgrind_control -d): instructions / INSTR_REQUESTS is the result.
# Every measured response must be 200 and the IdP must have been called as
# often as the scenario says (never for a cache hit, once per request
# without a cache); otherwise the scenario is reported INVALID.
#
# Rows 11r-14 (issues 23 and 24), set up as in bench.sh: JWT access tokens
# checked at the gateway (INSTR_JWT_TOKENS distinct ~800-byte tokens, drawn at
# random; first seen: a signature check per request; cached: filled first,
# every request a hit), a cached DPoP-bound token with a fresh ES256 proof per
# request (proofs made by the npm dpop package just before the scenario), and a
# certificate-bound token over one TLS connection with a client certificate,
# whose cost ratio is to row 1t, the plain proxy over the same TLS. Row 12i is
# row 4 with row 12's tokens (opaque to it): the same token length as row 12,
# hence the same SHA-256 work for the cache key, to compare the two hits. These rows
# also read the module's metrics around the measured requests: each must have
# been a signature check, a cache hit or a valid proof, as the row says.
#
# Usage: scripts/bench-instructions.sh (after make build)
#   INSTR_REQUESTS=2000  measured requests per scenario
#   INSTR_WARMUP=100     requests before each measurement
#   INSTR_TOKENS=100000  distinct tokens cached for scenario 4
#   INSTR_JWT_TOKENS=10000  distinct JWTs of rows 11r, 11e, 12 and 12i
#   INSTR_SAVE=dir       keep each scenario's callgrind dump there, for
#                        callgrind_annotate dir/callgrind.<scenario>.out
#   INSTR_SSF=1          the gateway has a Shared Signals receiver (an empty
#                        revocation list checked on every request)
#   INSTR_SSF_REVOCATIONS=N  with INSTR_SSF=1: N revocations on the list
#                        (pushed as SETs before the measurements)
# Results: a table on stdout and bench/instructions.json; the exit status is
# 1 when a scenario is INVALID.
set -euo pipefail
SAVE=${INSTR_SAVE:+$(realpath -m "$INSTR_SAVE")}
cd "$(dirname "$0")/.."

REQUESTS=${INSTR_REQUESTS:-2000}
WARMUP=${INSTR_WARMUP:-100}
TOKENS=${INSTR_TOKENS:-100000}
JWT_TOKENS=${INSTR_JWT_TOKENS:-10000}
GW_PORT=18680 PLAIN_PORT=18681 IDP_PORT=18682 BACKEND_PORT=18683 REDIS_PORT=18684
GW_TLS_PORT=18685 PLAIN_TLS_PORT=18686
# Row 10c's gateway on a 3-primary Redis Cluster (ports 18690..18695).
GWC_PORT=18687 GWC_TLS_PORT=18688 CLUSTER_PORT=18690
GW_CPU=0 LOAD_CPU=1
[ "$(nproc)" -ge 2 ] || LOAD_CPU=0
# Filled tokens must all stay cached: ~260 bytes an entry (DIRECTIVES.md,
# cache sizing), planned at 420 plus room for the other scenarios' entries.
ZONE_MB=$(( (TOKENS + JWT_TOKENS) / 2500 + 8 ))

for f in objs/nginx objs/ngx_http_auth_oauth2_token_module.so; do
  [ -f "$f" ] || { echo "bench-instructions: $f is missing, run make build" >&2; exit 1; }
done

work=$(mktemp -d /tmp/oauth2-instr.XXXXXX)
chmod 755 "$work"    # the peer's workers run as nobody
vg_pids=()
cleanup() {
  for pid in "${vg_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/peer/logs/nginx.pid" ] && "$work/nginx" -p "$work/peer" -c nginx.conf -s stop 2>/dev/null || true
  redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true
  bench_cluster_stop $CLUSTER_PORT
  wait
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
# Copies, so that a rebuild of objs/ during the run does not change what runs.
cp objs/nginx objs/ngx_http_auth_oauth2_token_module.so "$work/"
NGINX=$work/nginx
MODULE=$work/ngx_http_auth_oauth2_token_module.so
mkdir -p "$work/peer/logs" "$work/gw/logs" "$work/gwc/logs" "$work/plain/logs" "$work/plain/cache" "$work/redis"

. scripts/bench-common.sh
JWT=$(bench_phantom_jwt)
bench_npm_deps
bench_client_keys "$work"
echo "making $JWT_TOKENS RS256 and $JWT_TOKENS ES256 JWTs, the DPoP key and the TLS certificates" >&2
bench_jwt_keys "$work"
for alg in RS256 ES256; do
  bench_jwt_tokens "$work" $alg "$JWT_TOKENS" >"$work/jwt-${alg,,}.txt"
done
DPOP_JKT=$(bench_dpop_key "$work/dpop-key.json")
X5T=$(bench_tls_certs "$work")
# The shared tier's Redis (scenario 10), on the load CPU.
openssl rand -hex 32 >"$work/fleet.key"
taskset -c $LOAD_CPU redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no \
  --dir "$work/redis" --daemonize yes --logfile "$work/redis/redis.log" >/dev/null
# Row 10c's Redis Cluster, on the load CPU too.
bench_cluster_start "$work/cluster" $CLUSTER_PORT $LOAD_CPU
bench_peer_conf $IDP_PORT $BACKEND_PORT "$JWT" "$DPOP_JKT" "$X5T" >"$work/peer/nginx.conf"
# INSTR_SSF=1: a receiver with a transmitter key set of one EC key, made by
# the test suite's transmitter (t/oidc/ssf-transmitter.mjs, npm jose), and its
# push location. With INSTR_SSF_REVOCATIONS=N the list is sized for N and
# filled with N revocations (of other subjects than the bench token's) before
# the measurements.
ssf_http=""
ssf_locations=""
SSF_REVOCATIONS=${INSTR_SSF_REVOCATIONS:-0}
if [ "${INSTR_SSF:-0}" = 1 ]; then
  printf '{"keyfile": "%s", "jwksfile": "%s"}' "$work/ssf.jwk" "$work/ssf.jwks" | node t/oidc/ssf-transmitter.mjs >/dev/null
  # ~128 bytes a revocation, plus the buckets (512 zone bytes each): 320 bytes each, 4m at least.
  ssf_mb=$(( SSF_REVOCATIONS * 320 / 1048576 + 4 ))
  ssf_http="    auth_oauth2_token_ssf_receiver zone=ssf:${ssf_mb}m issuer=https://idp.bench audience=https://gw.bench keys=$work/ssf.jwks;"
  ssf_locations="        location = /_bench_ssf { auth_oauth2_token_ssf_push; }"
fi

# bench.sh's gateway, run by callgrind as one process: the same server{} for
# both, the module's locations only where it is loaded.
gateway_conf() { # $1: with module (1/0), $2: port, $3: with the phantom location (1/0), $4: TLS port,
                # $5: the shared tier on the Redis Cluster (1) rather than the one Redis
  local load="" module_http="" module_locations="" ssf_http="$ssf_http" ssf_locations="$ssf_locations"
  # The receiver refuses a Redis Cluster: row 10c's gateway goes without.
  [ "${5:-0}" = 1 ] && ssf_http="" ssf_locations=""
  if [ "$1" = 1 ]; then
    load="load_module $MODULE;"
    module_http="$(bench_module_http)
$(if [ "${5:-0}" = 1 ]; then bench_shared_http $CLUSTER_PORT "$work/fleet.key" cluster
  else bench_shared_http $REDIS_PORT "$work/fleet.key"; fi)
$ssf_http"
    module_locations="$(bench_module_locations "${ZONE_MB}m" "$3" "$work")
$(bench_shared_locations)
$(bench_jwt_dpop_locations "$work")
$ssf_locations"
  fi
  cat <<CONF
$load
daemon off;
master_process off;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;    # every scenario's requests on one connection
    upstream idp { server 127.0.0.1:$IDP_PORT; keepalive 64; }
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache_path $work/plain/cache keys_zone=recipe:10m;
$module_http
    server {
        listen 127.0.0.1:$2;
        location /plain/ { proxy_pass http://backend; }
$(bench_recipe_locations)
$module_locations
    }
$(bench_tls_server "$4" "$work" "$1")
}
CONF
}

# The phantom scenario only when this build accepts auth_oauth2_token_phantom.
PHANTOM=1
gateway_conf 1 "$GW_PORT" 1 "$GW_TLS_PORT" >"$work/gw/nginx.conf"
if ! "$NGINX" -t -q -p "$work/gw" -c nginx.conf 2>"$work/phantom-check.txt"; then
  PHANTOM=0
  echo "bench-instructions: scenario 7 unavailable: $(grep -m1 emerg "$work/phantom-check.txt")" >&2
  gateway_conf 1 "$GW_PORT" 0 "$GW_TLS_PORT" >"$work/gw/nginx.conf"
fi
gateway_conf 0 "$PLAIN_PORT" 0 "$PLAIN_TLS_PORT" >"$work/plain/nginx.conf"
gateway_conf 1 "$GWC_PORT" 0 "$GWC_TLS_PORT" 1 >"$work/gwc/nginx.conf"

start_gateway() { # $1: name, $2: port
  taskset -c $GW_CPU valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/$1/callgrind.out.%p" --log-file="$work/$1/valgrind.log" \
    "$NGINX" -p "$work/$1" -c nginx.conf &
  local pid=$!
  vg_pids+=("$pid")
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "bench-instructions: gateway $1 did not start" >&2
  cat "$work/$1/logs/error.log" "$work/$1/valgrind.log" >&2
  exit 1
}

# The client: requests over one keep-alive connection. Tokens are
# bench-token-1, or with "random" one of bench-token-1..TOKENS from a
# generator with a fixed seed, so that every run sends the same sequence.
# Options after the mode (comma-separated): file=PATH draws the tokens from
# the file's lines instead; dpop=PATH sends the DPoP scheme and the file's
# proofs in order, one per request; tls=DIR connects with TLS and DIR's client
# certificate.
cat >"$work/client.py" <<'PY'
import collections, glob, json, os, random, shutil, socket, ssl, subprocess, sys, time, urllib.request

TOKENS = int(os.environ["TOKENS"])
OPTIONS = {}

def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if "tls" in OPTIONS:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(OPTIONS["tls"] + "/tls-client.crt", OPTIONS["tls"] + "/tls-client.key")
        sock = context.wrap_socket(sock)
    return sock, sock.makefile("rb")

def lines_of(path):
    with open(path) as f:
        return f.read().split()

def token_of(n):
    return OPTIONS["tokens"][n - 1] if "tokens" in OPTIONS else f"bench-token-{n}"

def request(path, n):
    if "proofs" in OPTIONS:
        proof = next(OPTIONS["proofs"])
        return (f"GET {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: DPoP {token_of(n)}\r\n"
                f"DPoP: {proof}\r\n\r\n").encode()
    return f"GET {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token_of(n)}\r\n\r\n".encode()

def options(mode):
    """mode[,file=PATH][,dpop=PATH][,tls=DIR]: sets OPTIONS, returns the mode."""
    global TOKENS
    mode, *rest = mode.split(",")
    for option in rest:
        name, _, value = option.partition("=")
        if name == "file":
            OPTIONS["tokens"] = lines_of(value)
            TOKENS = len(OPTIONS["tokens"])
        elif name == "dpop":
            OPTIONS["proofs"] = iter(lines_of(value))
        else:
            OPTIONS[name] = value
    return mode

def metric(name):
    """A counter of the module's metrics page (bench_metrics' names, METRICS)."""
    text = urllib.request.urlopen(os.environ["METRICS"]).read().decode()
    series = {"jwt_verified": 'oauth2_token_jwt_checks_total{result="verified"}',
              "dpop_valid": 'oauth2_token_dpop_proofs_total{result="valid"}',
              "jwt_hit": 'oauth2_token_cache_lookups_total{zone="jwt",result="hit"}',
              "dpop_hit": 'oauth2_token_cache_lookups_total{zone="dpop_bound",result="hit"}',
              "mtls_hit": 'oauth2_token_cache_lookups_total{zone="mtls_bound",result="hit"}'}[name]
    return sum(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith(series + " "))

def response(f):
    """Reads one response, returns its status."""
    line = f.readline()
    if not line:
        raise ConnectionError("the gateway closed the connection")
    status = int(line.split()[1])
    length, chunked = 0, False
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    if chunked:
        while size := int(f.readline().split(b";")[0], 16):
            f.read(size + 2)
        f.readline()
    else:
        f.read(length)
    return status

def lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)

def callgrind(pid, *command):
    done = subprocess.run(["callgrind_control", *command, pid], capture_output=True, text=True)
    if done.returncode or "OK" not in done.stdout:
        sys.exit(f"callgrind_control {' '.join(command)} failed: {done.stdout}{done.stderr}")

def fill(port, path, mode="one", depth=64):
    """Sends bench-token-1..TOKENS (or the mode's file=) once each, pipelined: exit status 1 unless all are 200."""
    options(mode)
    sock, f = connect(port)
    bad = collections.Counter()
    for first in range(1, TOKENS + 1, depth):
        batch = range(first, min(first + depth, TOKENS + 1))
        sock.sendall(b"".join(request(path, n) for n in batch))
        for _ in batch:
            status = response(f)
            if status != 200:
                bad[status] += 1
    if bad:
        sys.exit(f"fill: statuses other than 200: {dict(bad)}")

def measure(port, path, mode, pid, dump_prefix, idp_log, save="", check=""):
    """Prints one JSON line: statuses, IdP calls and instructions of the measured requests,
    and with check (name=per request) how much that metric grew; copies the callgrind dump
    to save, if given."""
    mode = options(mode)
    requests, warmup = int(os.environ["REQUESTS"]), int(os.environ["WARMUP"])
    rng = random.Random(1)
    token = (lambda: rng.randint(1, TOKENS)) if mode == "random" else (lambda: 1)
    sock, f = connect(port)
    statuses = collections.Counter()

    def send(count, tally):
        for _ in range(count):
            sock.sendall(request(path, token()))
            status = response(f)
            if tally:
                statuses[status] += 1

    send(warmup, False)
    check_name = check.partition("=")[0]
    counted = metric(check_name) if check else 0
    callgrind(pid, "-i", "on")
    callgrind(pid, "-z")
    idp_before = lines(idp_log)
    started = time.monotonic()
    send(requests, True)
    seconds = time.monotonic() - started
    dumps = set(glob.glob(dump_prefix + ".*"))
    callgrind(pid, "-d")
    callgrind(pid, "-i", "off")
    idp_calls = lines(idp_log) - idp_before
    checked = {"check": check, "counted": metric(check_name) - counted} if check else {}
    (dump,) = set(glob.glob(dump_prefix + ".*")) - dumps
    with open(dump) as d:
        ir = next(int(l.split()[1]) for l in d if l.startswith("summary:"))
    if save:
        shutil.copyfile(dump, save)
    print(json.dumps({"statuses": {str(k): v for k, v in statuses.items()}, "requests": requests,
                      "idp_calls": idp_calls, "instructions": ir, "seconds": round(seconds, 1), **checked}))

if __name__ == "__main__":
    {"fill": fill, "measure": measure}[sys.argv[1]](int(sys.argv[2]), *sys.argv[3:])
PY

taskset -c $LOAD_CPU "$NGINX" -p "$work/peer" -c nginx.conf
start_gateway plain $PLAIN_PORT
start_gateway gw $GW_PORT
start_gateway gwc $GWC_PORT
METRICS=http://127.0.0.1:$GW_PORT/_bench_metrics
export TOKENS REQUESTS WARMUP METRICS
client() { taskset -c $LOAD_CPU python3 "$work/client.py" "$@"; }

echo "filling the cache with $TOKENS tokens (instrumentation off)" >&2
fill_started=$SECONDS
client fill $GW_PORT /introspect-cached/
echo "  filled in $(( SECONDS - fill_started ))s; the shared tier too" >&2
client fill $GW_PORT /shared/
echo "  and the shared tier on the Redis Cluster" >&2
client fill $GWC_PORT /shared/
echo "  and the JWT cache with $JWT_TOKENS tokens" >&2
client fill $GW_PORT /jwt-cached/ "one,file=$work/jwt-rs256.txt"
client fill $GW_PORT /introspect-cached/ "one,file=$work/jwt-rs256.txt"
if [ "$SSF_REVOCATIONS" -gt 0 ]; then
  echo "  and the revocation list with $SSF_REVOCATIONS revocations" >&2
  bench_ssf_fill "$work" "$SSF_REVOCATIONS" $GW_PORT "$METRICS" >&2
fi

# id|name|gateway|port|path|tokens (mode and options, see client.py)|IdP calls
# per request|check: metric=per request|baseline of the cost ratio (1 if empty)
SCENARIOS=(
  "1|baseline: plain proxy, no module|plain|$PLAIN_PORT|/plain/|one|0"
  "2|module loaded, location without auth|gw|$GW_PORT|/plain/|one|0"
  "3|introspection, cache hit, one token|gw|$GW_PORT|/introspect-cached/|one|0"
  "4|introspection, cache hit, $TOKENS tokens|gw|$GW_PORT|/introspect-cached/|random|0"
  "5|introspection, no cache|gw|$GW_PORT|/introspect-nocache/|one|1"
  "5e|introspection, no cache, private_key_jwt ES256|gw|$GW_PORT|/pkjwt-es256/|one|1"
  "5r|introspection, no cache, private_key_jwt RS256|gw|$GW_PORT|/pkjwt-rs256/|one|1"
  "6|introspection + exchange, both cached|gw|$GW_PORT|/exchange-cached/|one|0"
  "7|phantom token (${#JWT}-byte JWT), cached|gw|$GW_PORT|/phantom-cached/|one|0"
  "8a|auth_request recipe, proxy_cache hit|plain|$PLAIN_PORT|/recipe-cached/|one|0"
  "8b|auth_request recipe, no cache|plain|$PLAIN_PORT|/recipe-nocache/|one|1"
  "10|shared tier (Redis) hit, zone cold, $TOKENS tokens|gw|$GW_PORT|/shared/|random|0"
  "10c|row 10 through a 3-primary Redis Cluster|gwc|$GWC_PORT|/shared/|random|0"
  "11r|JWT first seen, RS256, $JWT_TOKENS tokens|gw|$GW_PORT|/jwt-rs256/|random,file=$work/jwt-rs256.txt|0|jwt_verified=1"
  "11e|JWT first seen, ES256, $JWT_TOKENS tokens|gw|$GW_PORT|/jwt-es256/|random,file=$work/jwt-es256.txt|0|jwt_verified=1"
  "12|JWT cached, $JWT_TOKENS tokens (RS256)|gw|$GW_PORT|/jwt-cached/|random,file=$work/jwt-rs256.txt|0|jwt_hit=1"
  "12i|introspection cache hit, row 12's tokens|gw|$GW_PORT|/introspect-cached/|random,file=$work/jwt-rs256.txt|0"
  "13|DPoP-bound token cached, ES256 proof each|gw|$GW_PORT|/dpop-cached/|one,dpop=$work/proofs.txt|0|dpop_valid=1"
  "1t|baseline over mTLS: plain proxy, no module|plain|$PLAIN_TLS_PORT|/plain/|one,tls=$work|0"
  "14|mTLS cert-bound token cached (vs 1t)|gw|$GW_TLS_PORT|/mtls-cached/|one,tls=$work|0|mtls_hit=1|1t"
)
[ -z "$SAVE" ] || mkdir -p "$SAVE"

raw=$work/results.txt
: >"$raw"
for sc in "${SCENARIOS[@]}"; do
  IFS='|' read -r id name gw port path tokens per_request check base <<<"$sc"
  # INSTR_ONLY: a regular expression of the ids to run (the baselines always run).
  [[ "$id" =~ ${INSTR_ONLY:-.} || "$id" =~ ^1t?$ ]] || continue
  if [ "$id" = 7 ] && [ "$PHANTOM" = 0 ]; then
    echo "$id|$name|$per_request|${base:-1}|unavailable" >>"$raw"
    continue
  fi
  # A fresh proof per request, made now (a proof is good once, for 120s).
  [[ "$tokens" == *dpop=* ]] && bench_dpop_proofs "$work/dpop-key.json" "http://gateway$path" bench-token-1 \
    $(( REQUESTS + WARMUP )) "$work/proofs.txt"
  pid=$(cat "$work/$gw/logs/nginx.pid")
  line=$(client measure "$port" "$path" "$tokens" "$pid" "$work/$gw/callgrind.out.$pid" \
    "$work/peer/logs/idp.log" "${SAVE:+$SAVE/callgrind.$id.out}" "$check") || line='{"error": "the client failed"}'
  echo "$id|$name|$per_request|${base:-1}|$line" >>"$raw"
  printf '  %-3s %-44s %s\n' "$id" "$name" "$line" >&2
done

# The table, bench/instructions.json, and the exit status: 1 if a scenario is INVALID.
mkdir -p bench
status=0
python3 - "$raw" "$REQUESTS" "$WARMUP" "$TOKENS" "$(git describe --always --dirty 2>/dev/null || echo unknown)" <<'PY' || status=$?
import json, sys
raw, requests, warmup, tokens, commit = sys.argv[1:]
rows = []
for line in open(raw):
    sid, name, per_request, base_id, result = line.rstrip("\n").split("|", 4)
    row = {"id": sid, "scenario": name, "baseline": base_id}
    rows.append(row)
    if result == "unavailable":
        row.update(status="unavailable", note="auth_oauth2_token_phantom is not accepted by nginx -t")
        continue
    r = json.loads(result)
    problems = [r["error"]] if "error" in r else []
    if not problems:
        other = {k: v for k, v in r["statuses"].items() if k != "200"}
        if other:
            problems.append(f"statuses other than 200: {other}")
        expected = int(per_request) * r["requests"]
        if r["idp_calls"] != expected:
            problems.append(f"{r['idp_calls']} IdP calls, expected {expected}")
        if "check" in r:
            name, per = r["check"].split("=")
            if r["counted"] != int(per) * r["requests"]:
                problems.append(f"{name} grew by {r['counted']}, expected {int(per) * r['requests']}")
        row.update(instructions_per_request=round(r["instructions"] / r["requests"]),
                   idp_calls=r["idp_calls"], measured_seconds=r["seconds"])
    row["status"] = "INVALID" if problems else "ok"
    if problems:
        row["note"] = "; ".join(problems)
bases = {r["id"]: r for r in rows if r["id"] in ("1", "1t") and r["status"] == "ok"}
for r in rows:
    base = bases.get(r["baseline"])
    if base and r["status"] == "ok":
        r["cost_ratio"] = round(r["instructions_per_request"] / base["instructions_per_request"], 3)
        r["throughput_equivalent_ratio"] = round(base["instructions_per_request"] / r["instructions_per_request"], 3)
with open("bench/instructions.json", "w") as f:
    json.dump({"requests": int(requests), "warmup": int(warmup), "tokens": int(tokens),
               "commit": commit, "scenarios": rows}, f, indent=2)

print(f"{'scenario':50} {'Ir/request':>10} {'cost':>6} {'thrpt':>6} {'IdP calls':>9}  note")
for r in rows:
    ir = f"{r['instructions_per_request']:10d}" if "instructions_per_request" in r else f"{'n/a':>10}"
    cost, thr = (f"{r['cost_ratio']:6.2f}", f"{r['throughput_equivalent_ratio']:6.2f}") if "cost_ratio" in r else (f"{'-':>6}",) * 2
    calls = f"{r['idp_calls']:9d}" if "idp_calls" in r else f"{'':9}"
    note = "" if r["status"] == "ok" else f"{r['status']}: {r['note']}"
    if r["baseline"] != "1":
        note = f"cost to row {r['baseline']} {note}"
    print(f"{r['id']:4}{r['scenario']:46} {ir} {cost} {thr} {calls}  {note}".rstrip())
print(f"{requests} requests per scenario after {warmup} of warm-up. "
      "cost: Ir / baseline Ir (row 1, or the row noted; lower is better); thrpt: baseline Ir / Ir")
sys.exit(any(r["status"] == "INVALID" for r in rows))
PY
echo "wrote bench/instructions.json (${SECONDS}s in all)" >&2
exit $status
