#!/usr/bin/env bash
# make fuzz: the cargo-fuzz targets (fuzz/fuzz_targets/) one after another,
# each from its working corpus fuzz/corpus/TARGET, seeded from fuzz/seeds/TARGET.
# The inputs in fuzz/regressions/TARGET, once found failing, are run first
# (one pass each), so a fixed bug that comes back fails at once.
#
#   scripts/fuzz.sh [TARGET...]     (default: every target)
#
# FUZZ_SECONDS  time limit per target (default 60)
# FUZZ_RUNS     executions per target (default: none, the time limit decides)
# FUZZ_ARGS     more libFuzzer options, e.g. "-max_len=16384 -jobs=1"
# FUZZ_BUILD    cargo-fuzz build options (default "-O -a": release with debug
#               assertions and overflow checks; AddressSanitizer by default)
#
# Prints, per target, what libFuzzer's final stats report; fails if a target
# found a crash or a failed property (the input is in fuzz/artifacts/TARGET/).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
RUNS=${FUZZ_RUNS:-}
read -r -a BUILD <<<"${FUZZ_BUILD:--O -a}"
read -r -a EXTRA <<<"${FUZZ_ARGS:-}"
TOOLCHAIN=${FUZZ_TOOLCHAIN:-+nightly}

if ! cargo "$TOOLCHAIN" --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "$TOOLCHAIN" fuzz list)
fi

cargo "$TOOLCHAIN" fuzz build "${BUILD[@]}"

mkdir -p fuzz/logs
summary=()
failed=()
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  [ -d "fuzz/seeds/$target" ] && cp -n "fuzz/seeds/$target"/* "$corpus"/ 2>/dev/null || true

  if [ -d "fuzz/regressions/$target" ] && [ -n "$(ls -A "fuzz/regressions/$target")" ]; then
    echo "== $target: regressions"
    if ! cargo "$TOOLCHAIN" fuzz run "${BUILD[@]}" "$target" "fuzz/regressions/$target"/* \
        >"fuzz/logs/$target.regressions.log" 2>&1; then
      echo "fuzz: $target fails on an input of fuzz/regressions/$target (fuzz/logs/$target.regressions.log)" >&2
      failed+=("$target")
      summary+=("$(printf '%-14s %14s %8s %10s  %-14s %s' "$target" - - - - "regression fails")")
      continue
    fi
  fi

  # The module's source may change between targets (each run rebuilds).
  src=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD -- src 2>/dev/null || src="$src+changes"
  echo "== $target: up to ${SECONDS_PER_TARGET}s${RUNS:+, $RUNS runs} (src $src)"
  options=(-max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 "${EXTRA[@]}")
  [ -n "$RUNS" ] && options+=(-runs="$RUNS")
  log=fuzz/logs/$target.log
  start=$(date +%s)
  status=ok
  cargo "$TOOLCHAIN" fuzz run "${BUILD[@]}" "$target" "$corpus" -- "${options[@]}" >"$log" 2>&1 \
    || status="FAILED (see $log and fuzz/artifacts/$target/)"
  # libFuzzer's own count and time ("Done N runs in S second(s)"); the wall
  # clock, which includes any rebuild, when it stopped on a failure.
  elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  elapsed=${elapsed:-$(( $(date +%s) - start ))}
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  [ "$status" = ok ] || failed+=("$target")
  line=$(printf '%-14s %14s %8s %10s  %-14s %s' "$target" "${execs:-?}" "${elapsed}s" "${rate:-?}" "$src" "$status")
  echo "$line"
  summary+=("$line")
done

echo
printf '%-14s %14s %8s %10s  %-14s %s\n' target executions time exec/s src result
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
