#!/usr/bin/env bash
# Fuzzes the channel's frame decoder and message reassembler.
#
#   scripts/fuzz.sh            replay the corpus, then fuzz each target for 60 s
#   scripts/fuzz.sh 300        ... for 300 s per target
#
# Targets (fuzz/fuzz_targets/, logic in tests/fuzz_common/):
#   frame_decode   arbitrary bytes as one packet: Header::parse, the payload
#                  decoders, and an Inbox reading it from a real socketpair
#   reassemble     arbitrary bytes as a script of message chunks, checked
#                  packet by packet against a reference model
#
# 1. The committed corpus (fuzz/corpus/<target>/) is replayed with plain
#    `cargo test --test fuzz_replay` (stable Rust, no libFuzzer needed; the
#    same test also runs a bounded random loop and is part of `cargo test`).
# 2. With cargo-fuzz installed (`cargo install cargo-fuzz`), each target is
#    fuzzed by libFuzzer with AddressSanitizer. Only a stable toolchain is
#    needed: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz passes.
#    New inputs go to a scratch directory, not into the committed corpus.
#    A crash is saved under fuzz/artifacts/<target>/: copy it into
#    fuzz/corpus/<target>/ and it is a regression test from then on.
#    Without cargo-fuzz, a longer random loop runs instead.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:-60}
TARGETS=(frame_decode reassemble)

echo "== replaying the corpus (cargo test --test fuzz_replay)"
timeout 600 cargo test --test fuzz_replay -- --test-threads=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== cargo-fuzz is not installed: random loop instead (FUZZ_ITERATIONS=200000)"
  FUZZ_ITERATIONS=200000 timeout $((SECONDS_PER_TARGET * ${#TARGETS[@]} + 600)) \
    cargo test --release --test fuzz_replay random -- --test-threads=1
  exit 0
fi

export RUSTC_BOOTSTRAP=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${TARGETS[@]}"; do
  echo "== building $t"
  timeout 1200 cargo fuzz build -O "$t"
  echo "== $t: corpus under libFuzzer, then ${SECONDS_PER_TARGET}s of fuzzing"
  mkdir -p "$scratch/$t"
  timeout 300 cargo fuzz run -O "$t" "fuzz/corpus/$t" -- -runs=0
  timeout $((SECONDS_PER_TARGET + 120)) cargo fuzz run -O "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=70000 -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|Test unit written)' || true
  if [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then
    echo "crash inputs in fuzz/artifacts/$t:" >&2
    ls "fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "== fuzzing done: no crash"
