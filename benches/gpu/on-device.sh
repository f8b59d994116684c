#!/usr/bin/env bash
# The GPU measurements, as one script for a GPU machine without a package registry:
# run from the repository root on the device, with the binaries and the Vulkan loader carried
# (see benches/gpu/README.md). Results land in $OUT (default: benches/results) as JSON, Markdown
# and SVG, each recording the device, the commit and the command.
#
#   benches/gpu/on-device.sh [TAG] [WHAT...]     WHAT: decode fused 1b 8b (default: all four)
set -euo pipefail
TAG="${1:-h200}"; shift || true
WHAT="${*:-decode fused 1b 8b}"
OUT="${OUT:-benches/results}"
BIN="${BIN:-.bin}"
mkdir -p "$OUT"

# The Vulkan loader, unpacked from the carried Debian packages, if the machine lacks it.
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
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
      "$BIN/decode-bench" --json --shapes 4096x4096,14336x4096 --reps 10 --no-cpu >"$OUT/$TAG-decode-bench.json.tmp"
      mv "$OUT/$TAG-decode-bench.json.tmp" "$OUT/$TAG-decode-bench.json" ;;
    fused)
      # Batch-1 fused products against decode + matmul and dense, Llama-3-8B matrix shapes.
      for shape in 4096x4096 14336x4096 4096x14336; do
        "$BIN/fused-bench" --gpu --shape "$shape" --reps 20 --crossover >"$OUT/$TAG-fused-bench-$shape.json.tmp"
        mv "$OUT/$TAG-fused-bench-$shape.json.tmp" "$OUT/$TAG-fused-bench-$shape.json"
      done ;;
    1b) "$BIN/compare_policies" --synthetic llama3.2-1b --device vulkan --tag "$TAG" --out "$OUT" --max-tokens 32 ;;
    8b) "$BIN/compare_policies" --synthetic llama3-8b --device vulkan --tag "$TAG" --out "$OUT" --quick --max-tokens 16 ;;
    *) echo "unknown measurement '$w' (expected decode, fused, 1b or 8b)" >&2; exit 2 ;;
  esac
done
ls -l "$OUT"
