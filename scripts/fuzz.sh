#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for a while from its committed corpus
# (fuzz/corpus/<target>, read-only here: new inputs go to a scratch directory).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s for every target
#
# Installs nothing: it needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable
# toolchain the nightly flags cargo-fuzz passes are allowed with RUSTC_BOOTSTRAP=1 (set here
# unless already set). Builds go to $CARGO_TARGET_DIR when set. Environment knobs:
#   FUZZ_RSS_MB    memory limit per target in MiB (default 2048)
#   FUZZ_WORK      where new corpus entries and crash artifacts go (default: a temp directory)
#   FUZZ_FLEX=1    also run decode_batch_flex (Burn's Flex backend: a sanitizer build of Burn,
#                  about 20 minutes on 2 cores)
# Exits non-zero if any target crashes, leaks, times out or runs out of memory; each failure's
# input is kept under $FUZZ_WORK/artifacts/<target>/ and replayed once so its panic message shows.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz is not installed; install it with: cargo install cargo-fuzz --locked" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}

# target:max_len:extra cargo-fuzz flags. The CLI-driven targets print per input; their output
# is closed (-close_fd_mask=3) and a failing input is replayed with it afterwards.
all_targets=(
    "open_and_decode:65536:"
    "rans_decode:16384:"
    "gguf_read:65536:"
    "gguf_dequant:8192:"
    "gguf_tokenizer:16384:"
    "gguf_to_ember:65536:quiet"
    "safetensors_read:32768:quiet"
    "decode_batch_flex:65536:flex"
)
if [ $# -gt 0 ]; then
    selected=()
    for want in "$@"; do
        found=
        for spec in "${all_targets[@]}"; do
            if [ "${spec%%:*}" = "$want" ]; then selected+=("$spec"); found=1; fi
        done
        if [ -z "$found" ]; then
            echo "error: unknown target \`$want\` (known: $(printf '%s ' "${all_targets[@]%%:*}"))" >&2
            exit 2
        fi
    done
else
    selected=()
    for spec in "${all_targets[@]}"; do
        if [ "${spec##*:}" != flex ] || [ "${FUZZ_FLEX:-0}" = 1 ]; then selected+=("$spec"); fi
    done
fi

work=${FUZZ_WORK:-$(mktemp -d -t ember-fuzz.XXXXXX)}
mkdir -p "$work"
rss=${FUZZ_RSS_MB:-2048}
failed=()

for spec in "${selected[@]}"; do
    IFS=: read -r target max_len extra <<<"$spec"
    features=()
    mask=()
    case "$extra" in
        flex) features=(--features flex) ;;
        quiet) mask=(-close_fd_mask=3) ;;
    esac
    echo "=== $target: building"
    cargo fuzz build -O -a "${features[@]}" "$target"
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target" "corpus/$target"
    echo "=== $target: fuzzing for ${seconds}s"
    if cargo fuzz run -O -a "${features[@]}" "$target" "$work/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss" -timeout=20 \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/$target/" "${mask[@]}"; then
        echo "=== $target: ok"
    else
        echo "=== $target: FAILED; inputs kept in $work/artifacts/$target/" >&2
        failed+=("$target")
        artifact=$(ls -t "$work/artifacts/$target"/* 2>/dev/null | head -n 1 || true)
        if [ -n "$artifact" ]; then
            echo "=== $target: replaying $artifact" >&2
            cargo fuzz run -O -a "${features[@]}" "$target" "$artifact" -- -rss_limit_mb="$rss" || true
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed for: ${failed[*]} (artifacts under $work/artifacts)" >&2
    exit 1
fi
echo "all ${#selected[@]} targets ran ${seconds}s without a failure (new inputs: $work/corpus)"
