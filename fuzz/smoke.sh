#!/usr/bin/env bash
# Fuzz smoke test: runs every fuzz target for FUZZ_SECONDS (default 20) on
# stable Rust, without a sanitizer (the code under test is safe Rust, so
# panics and failed assertions are what we look for).
#
#   fuzz/smoke.sh                       # all targets, 20 s each
#   FUZZ_SECONDS=300 fuzz/smoke.sh      # longer
#   fuzz/smoke.sh data_receiver         # one target
#
# Exits non-zero if any target finds a crash (the input is saved under
# fuzz/artifacts/<target>/; replay it with
# `cargo fuzz run --fuzz-dir fuzz --sanitizer none -O <target> <file>` from the project root).
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$fuzz_dir")"
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for f in "$fuzz_dir"/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

# cargo fuzz expects to run from the project root (it finds ./fuzz).
cd "$root"

failed=()
for t in "${targets[@]}"; do
    # The corpus is gitignored; start it from the checked-in seeds.
    mkdir -p "fuzz/corpus/$t"
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -- "fuzz/seeds/$t"/* "fuzz/corpus/$t/"
    fi
    echo "smoke: fuzzing $t for ${seconds}s" >&2
    # -O: no blanket debug assertions (cargo fuzz's default); they and the
    # overflow checks come from fuzz/Cargo.toml's release profile instead.
    # -timeout: report an input that runs longer than 10 s as a hang.
    if ! cargo fuzz run --fuzz-dir fuzz --sanitizer none -O "$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "smoke: FAILED: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "smoke: all targets passed (${targets[*]})" >&2
