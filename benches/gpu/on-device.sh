#!/usr/bin/env bash
# The GPU measurements, as one script for a GPU machine without a package registry:
# run from the repository root on the device, with the binaries and the Vulkan loader carried
# (see benches/gpu/README.md). Results land in $OUT (default: benches/results) as JSON, Markdown
# and SVG, each recording the device, the commit and the command.
#
#   benches/gpu/on-device.sh [TAG] [WHAT...]     WHAT: decode fused 1b 8b (default: all four)
#   benches/gpu/on-device.sh --rehearse [WHAT...]
#
# --rehearse runs the same steps, binaries and flags on whatever Vulkan device is present
# (lavapipe in CI) with tiny shapes, a tiny synthetic model and few tokens, writing into a
# scratch $OUT (default: a temporary directory), so the script cannot rot before a GPU is at
# hand. CI runs it from a test with the debug binaries (BIN=target/debug).
set -euo pipefail
REHEARSE=0
if [ "${1:-}" = "--rehearse" ]; then
  REHEARSE=1; shift
  TAG=rehearsal
  OUT="${OUT:-$(mktemp -d)}"
else
  TAG="${1:-h200}"; shift || true
fi
# The rehearsal's model step is the quick matrix (the full one differs only by --quick and
# takes an hour of debug-built children on lavapipe); name 1b to rehearse it too.
if [ "$REHEARSE" = 1 ]; then
  WHAT="${*:-decode fused 8b}"
else
  WHAT="${*:-decode fused 1b 8b}"
fi
OUT="${OUT:-benches/results}"
BIN="${BIN:-.bin}"
mkdir -p "$OUT"
for b in decode-bench fused-bench compare_policies; do
  # The bundle carries the binaries xz-compressed (benches/gpu/bundle.sh).
  if [ ! -x "$BIN/$b" ] && [ -e "$BIN/$b.xz" ]; then
    if command -v xz >/dev/null; then
      xz -dc "$BIN/$b.xz" >"$BIN/$b"
    else
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BIN/$b.xz" "$BIN/$b"
    fi
    chmod +x "$BIN/$b"
  fi
  # A cargo target directory keeps examples in examples/.
  if [ ! -x "$BIN/$b" ] && [ -x "$BIN/examples/$b" ]; then
    continue
  fi
  if [ ! -x "$BIN/$b" ]; then
    echo "error: $BIN/$b is missing: build the bundle first (benches/gpu/bundle.sh)" >&2
    exit 1
  fi
done
COMPARE="$BIN/compare_policies"
[ -x "$COMPARE" ] || COMPARE="$BIN/examples/compare_policies"

# Shapes, models and lengths: the real ones, or the rehearsal's tiny ones.
if [ "$REHEARSE" = 1 ]; then
  DECODE_SHAPES=256x256,512x256; DECODE_REPS=2
  FUSED_SHAPES="256x128 128x256"; FUSED_REPS=2
  MODEL_1B=tiny; MODEL_8B=tiny; TOKENS_1B=3; TOKENS_8B=2; TAG_8B="$TAG-quick"
else
  DECODE_SHAPES=4096x4096,14336x4096; DECODE_REPS=10
  FUSED_SHAPES="4096x4096 14336x4096 4096x14336"; FUSED_REPS=20
  MODEL_1B=llama3.2-1b; MODEL_8B=llama3-8b; TOKENS_1B=32; TOKENS_8B=16; TAG_8B="$TAG"
fi

# The Vulkan loader, unpacked from the carried Debian packages, if the machine lacks it.
if ! ldconfig -p | grep -q 'libvulkan.so.1' && [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# Which commit the binaries were built from (there is no .git on the device).
export EMBER_COMMIT="${EMBER_COMMIT:-$(cat "$BIN/COMMIT" 2>/dev/null || echo unknown)}"

# The model cache (synthetic models are generated here from a seed, once).
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/ember-cache}"

for w in $WHAT; do
  case "$w" in
    decode)
      "$BIN/decode-bench" --json --shapes "$DECODE_SHAPES" --reps "$DECODE_REPS" --no-cpu >"$OUT/$TAG-decode-bench.json.tmp"
      mv "$OUT/$TAG-decode-bench.json.tmp" "$OUT/$TAG-decode-bench.json" ;;
    fused)
      # Batch-1 fused products against decode + matmul and dense, Llama-3-8B matrix shapes.
      for shape in $FUSED_SHAPES; do
        "$BIN/fused-bench" --gpu --shape "$shape" --reps "$FUSED_REPS" --crossover >"$OUT/$TAG-fused-bench-$shape.json.tmp"
        mv "$OUT/$TAG-fused-bench-$shape.json.tmp" "$OUT/$TAG-fused-bench-$shape.json"
      done ;;
    1b) "$COMPARE" --synthetic "$MODEL_1B" --device vulkan --tag "$TAG" --out "$OUT" --max-tokens "$TOKENS_1B" ;;
    8b) "$COMPARE" --synthetic "$MODEL_8B" --device vulkan --tag "$TAG_8B" --out "$OUT" --quick --max-tokens "$TOKENS_8B" ;;
    *) echo "unknown measurement '$w' (expected decode, fused, 1b or 8b)" >&2; exit 2 ;;
  esac
done
ls -l "$OUT"
