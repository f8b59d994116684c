#!/usr/bin/env python3
"""GGUF files through `ember compress --gguf-codes native`: container size against the GGUF's,
and every tensor checked against the GGUF's own dequantized values.

    python3 benches/codec/gguf_exact.py [--ember-bin PATH] [--out benches/results/cpu-gguf-exact.json]

For each packaged model (SmolLM2-135M Q4_1, Gemma 3 270M Q4_K_M; fetched once by
`llama_lowmem`/the tests into ~/.cache/ember/gguf) it writes three containers:

- the reference: every tensor dequantized to F32 and coded `lossless` (`--gguf-dtype f32
  --gguf-codes dequantize`), decompressed to safetensors — exactly the values llama.cpp
  computes from the GGUF;
- `--scheme int8 --gguf-codes native` and `--scheme lossless --gguf-codes native`: quantized
  tensors kept as their codes, float tensors at their own precision;

then runs `ember verify --against` the reference and counts the tensors that match exactly.
Prints the JSON (also written to --out).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EMBER_CACHE", Path.home() / ".cache" / "ember")) / "gguf"
MODELS = {
    "SmolLM2-135M-Instruct Q4_1": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "Gemma 3 270M Q4_K_M": "gemma-3-270m-q4_k_m.gguf",
}


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed:\n{out.stderr}")
    return out


def build_ember():
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "ember-target"))
    run(["cargo", "build", "--release", "--locked", "-p", "ember-cli", "--target-dir", str(target)])
    return target / "release" / "ember"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ember-bin", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "benches/results/cpu-gguf-exact.json")
    a = p.parse_args()
    ember = a.ember_bin or build_ember()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, file in MODELS.items():
            gguf = CACHE / file
            if not gguf.exists():
                sys.exit(f"error: {gguf} is missing: run `cargo test --workspace --locked` or llama_lowmem once to fetch it")
            ref = tmp / "ref.ember"
            run([ember, "compress", gguf, "-o", ref, "--scheme", "lossless", "--gguf-dtype", "f32", "--gguf-codes", "dequantize"])
            run([ember, "decompress", ref, "-o", tmp / "ref.safetensors"])
            ref.unlink()
            for scheme in ["int8", "lossless"]:
                packed = tmp / f"{scheme}.ember"
                summary = run([ember, "compress", gguf, "-o", packed, "--scheme", scheme, "--gguf-codes", "native"]).stderr
                verify = run([ember, "verify", packed, "--against", tmp / "ref.safetensors"]).stdout
                lines = [l for l in verify.splitlines() if l.strip()]
                exact = sum(1 for l in lines if "bit-exact" in l or "max abs error 0.000e0" in l)
                kept = re.search(r"(\d+) of them kept", summary)
                rows.append({
                    "model": name,
                    "scheme": scheme,
                    "gguf_codes": "native",
                    "gguf_bytes": gguf.stat().st_size,
                    "container_bytes": packed.stat().st_size,
                    "container_vs_gguf": packed.stat().st_size / gguf.stat().st_size,
                    "tensors": len(lines),
                    "tensors_exact_vs_gguf": exact,
                    "kept_as_gguf_codes": int(kept.group(1)) if kept else 0,
                    "compress_summary": summary.strip().splitlines()[-1],
                })
                packed.unlink()
    commit = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).stdout.strip()
    report = {
        "benchmark": "GGUF compressed with --gguf-codes native: size and exactness against the GGUF",
        "command": "python3 benches/codec/gguf_exact.py",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": commit,
        "rows": rows,
    }
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
