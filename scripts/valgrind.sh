#!/usr/bin/env bash
# Runs the Rust tests under valgrind (memcheck): invalid reads and writes,
# uses of uninitialised memory, bad frees, in our code and in the `unsafe`
# around sendmsg/recvmsg/cmsg. Leak checking is off (test harness threads
# and process-lifetime statics are not leaks worth failing on).
#
#   scripts/valgrind.sh        (from anywhere; needs valgrind, ~1 minute)
#
# Bounded on purpose, to fit in .ci/run:
# - valgrind 3.19 (Debian 12) does not know pidfd_open(2) (syscall 434): the
#   tests that spawn processes (spawn::tests, and the reactor/policy/
#   reactor_hostile binaries, whose fake workers are real processes watched
#   through pidfds) fail with ENOSYS under it and are left out; they run
#   natively in `cargo test`.
# - tests that assert a send never blocks for 2 s, or that move 10,000 fds or
#   every message size, are left out: under valgrind they measure valgrind.
# - the fuzz replay runs its corpus and a 200-input random loop.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

# name -> extra arguments for the test binary ("-" = skip the binary).
declare -A RUN=(
  [rcluster]="--skip spawn::tests"
  [channel_malformed]=""
  [channel_fds]="--skip ten_thousand_fds_one_per_frame"
  [channel_messages]="--skip back_pressure_never_blocks_and_drains_in_order --skip sizes_round_trip_byte_exact --skip each_size_alone --skip two_writers_keep_their_order_and_never_interleave"
  [fuzz_replay]=""
  [offload_group]=""
)

# Build the test binaries and learn their paths.
mapfile -t bins < <(timeout 600 cargo test --no-run --message-format=json 2>/dev/null | node -e '
  const lines = require("fs").readFileSync(0, "utf8").split("\n");
  for (const l of lines) {
    let m; try { m = JSON.parse(l); } catch { continue; }
    if (m.reason === "compiler-artifact" && m.executable && m.profile && m.profile.test) {
      console.log(`${m.target.name} ${m.executable}`);
    }
  }')
[ "${#bins[@]}" -gt 0 ] || { echo "no test binaries were built" >&2; exit 1; }

failed=0
ran=0
for entry in "${bins[@]}"; do
  name=${entry%% *}
  exe=${entry#* }
  [ -n "${RUN[$name]+set}" ] || { echo "-- $name: not run under valgrind (spawns processes: pidfd)"; continue; }
  start=$SECONDS
  # shellcheck disable=SC2086 # the skip list is meant to split into words
  if FUZZ_ITERATIONS=200 timeout 300 valgrind -q --error-exitcode=99 --leak-check=no \
      "$exe" --test-threads=2 ${RUN[$name]} >"/tmp/rcluster-valgrind-$name.log" 2>&1; then
    echo "ok $name ($(grep -h '^test result' "/tmp/rcluster-valgrind-$name.log" | head -1)) $((SECONDS - start))s"
  else
    rc=$?
    echo "FAILED $name (exit $rc) $((SECONDS - start))s" >&2
    grep -E '^==[0-9]+==|panicked|FAILED' "/tmp/rcluster-valgrind-$name.log" | head -40 >&2
    failed=1
  fi
  ran=$((ran + 1))
done
[ "$ran" -ge "${#RUN[@]}" ] || { echo "expected ${#RUN[@]} test binaries, ran $ran" >&2; exit 1; }
exit $failed
