#!/usr/bin/env bash
# Bounded fuzz run for CI (issue #8): builds every cargo-fuzz target once, runs each for a
# fixed time on its committed corpus, and fails if any target crashes, panics, times out or
# runs out of memory. New inputs go to a scratch directory, so the committed corpus is only
# read and the work tree stays clean. The build's target dir is fuzz/target (cargo-fuzz's
# default), apart from the main build's.
#
# Usage: fuzz/run-bounded.sh [SECONDS_PER_TARGET]   (default 20; FUZZ_SECONDS also works)
#
# Sanitizer: none, with debug assertions on. The targets are safe Rust parsers (egressd's
# only unsafe code, src/sys/, is not reachable from them), so AddressSanitizer would find
# nothing that Rust's own checks miss, while slowing each run about twice; debug
# assertions add the integer-overflow checks a release build drops.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-${FUZZ_SECONDS:-20}}
flags=(--sanitizer none --debug-assertions)

# Nightly when the machine's rustup has it (cargo-fuzz's usual toolchain). rustup cannot
# download one here (no network but the package registries), and none is needed: without a
# sanitizer every flag cargo-fuzz passes (-Cpasses=sancov-module, -Cllvm-args=...) is a
# stable rustc flag, so the stable toolchain builds the same fuzzers.
if RUSTUP_AUTO_INSTALL=0 rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=+nightly
else
  echo "run-bounded: no nightly toolchain here; building with stable" >&2
  toolchain=+stable
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "run-bounded: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

started=$SECONDS
cargo "$toolchain" fuzz build "${flags[@]}"
build_secs=$((SECONDS - started))

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mapfile -t targets < <(cargo "$toolchain" fuzz list)
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "corpus/$t"
  log="$scratch/$t.log"
  # libFuzzer: the first corpus directory receives new inputs, the others are seeds.
  # -timeout: one input taking longer is a hang (a failure); -rss_limit_mb: a leak or an
  # unbounded allocation is a failure too.
  if cargo "$toolchain" fuzz run "${flags[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    echo "---- $t failed:" >&2
    grep -m 5 -E "panicked at|ERROR: libFuzzer|deadly signal|out-of-memory|timeout after" "$log" >&2 || true
    grep -A 12 -m 1 "^Failing input" "$log" >&2 || tail -n 40 "$log" >&2
    ls -1 "artifacts/$t" 2>/dev/null | sed "s|^|     artifact: fuzz/artifacts/$t/|" >&2 || true
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  seeds=$(find "corpus/$t" -type f | wc -l)
  found=$(find "$scratch/$t" -type f | wc -l)
  summary+=("$(printf '%-16s %-7s %10s runs %8s exec/s %5s seeds %5s new' \
    "$t" "$status" "${runs:-?}" "${speed:-?}" "$seeds" "$found")")
done

echo "fuzz: build ${build_secs}s, ${#targets[@]} targets x ${seconds}s, total $((SECONDS - started))s"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (reproduce: cd fuzz && cargo +nightly fuzz run ${flags[*]} TARGET artifacts/TARGET/FILE)" >&2
  exit 1
fi
