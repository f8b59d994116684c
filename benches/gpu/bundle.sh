#!/usr/bin/env bash
# Builds what a GPU machine without a package registry needs to run benches/gpu/on-device.sh,
# in one command on a build machine (from the repository root):
#
#   benches/gpu/bundle.sh
#
# - .bin/: decode-bench, fused-bench and compare_policies, release builds with the SPIR-V
#   compiler (`vulkan` feature), each xz-compressed (on-device.sh unpacks them), plus COMMIT;
# - .gl/: the Vulkan loader as Debian packages for amd64 (the machine's NVIDIA ICD needs it).
# Fails if the two together exceed 64 MiB (what one device call carries besides the tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ember-target}"
commit=$(git rev-parse --short HEAD)
EMBER_COMMIT=$commit cargo build --release --locked -p ember-kernels --features vulkan --bin decode-bench --bin fused-bench
EMBER_COMMIT=$commit cargo build --release --locked -p ember-llama --features ember/vulkan --example compare_policies
for d in .bin .gl; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >>.git/info/exclude
done
rm -rf .bin && mkdir -p .bin
for b in decode-bench fused-bench examples/compare_policies; do
  xz -T0 -6 -c "$CARGO_TARGET_DIR/release/$b" >".bin/$(basename "$b").xz"
done
echo "$commit" >.bin/COMMIT
if [ -z "$(ls .gl/*.deb 2>/dev/null)" ]; then
  mkdir -p .gl /tmp/amd64/partial
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update -qq
  (cd .gl && apt-get "${o[@]}" download libvulkan1)
fi
bytes=$(du -cb .bin .gl | tail -1 | cut -f1)
echo "bundle: $((bytes / 1048576)) MiB in .bin and .gl (commit $commit)"
if [ "$bytes" -gt $((64 * 1048576)) ]; then
  echo "error: the bundle exceeds 64 MiB" >&2
  exit 1
fi
