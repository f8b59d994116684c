#!/usr/bin/env python3
"""Batch-1 generation speed on the CPU path: ember (dense and fused schemes) beside llama.cpp,
on the same GGUF, the same prompt and the same thread count, in one run. Prints one JSON object
and writes it to --out.

    python3 benches/cpu/batch1.py [--threads 1] [--tokens 32] [--out benches/results/cpu-batch1.json]

ember runs as `llama_lowmem --json` (built here in release mode); llama.cpp as
`llama-cpp-python` from PyPI, installed once into a venv under the ember cache (it builds
llama.cpp from source: about ten minutes on two cores, then pip's cache keeps the wheel).
Each configuration is measured `--repeats` times, interleaved, and its median is reported; the
ratios are formed within this run only.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("EMBER_CACHE", pathlib.Path.home() / ".cache" / "ember"))
LLAMA_CPP_VERSION = "0.3.36"
PROMPT = "The capital of France is Paris. The capital of Germany is"

# (name, llama_lowmem arguments)
CONFIGS = [
    ("dense", ["--policy", "dense"]),
    ("lossless/none/fused", ["--scheme", "lossless", "--policy", "none", "--residency", "host", "--fused", "on"]),
    ("int8/none/fused", ["--scheme", "int8", "--policy", "none", "--residency", "host", "--fused", "on"]),
    ("int4/none/fused", ["--scheme", "int4", "--policy", "none", "--residency", "host", "--fused", "on"]),
    ("lossless/per-forward/decode", ["--scheme", "lossless", "--policy", "per-forward", "--fused", "off"]),
]


def target_dir():
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def build():
    subprocess.run(
        # The same targets as benches/README.md builds, so one release build serves every bench.
        ["cargo", "build", "--release", "--locked", "-p", "ember-llama", "--example", "llama_lowmem",
         "--example", "compare_policies", "-p", "ember-kernels", "--bin", "fused-bench"],
        cwd=ROOT,
        check=True,
    )
    return target_dir() / "release" / "examples" / "llama_lowmem"


def llama_cpp_python():
    venv = CACHE / "venv-llamacpp"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import llama_cpp; print(llama_cpp.__version__)"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"installing llama-cpp-python=={LLAMA_CPP_VERSION} into {venv} (builds llama.cpp once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"llama-cpp-python=={LLAMA_CPP_VERSION}"], check=True)
    return py


LLAMA_CPP_RUN = r"""
import json, sys, time
from llama_cpp import Llama
path, threads, tokens, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
ids = llm.tokenize(prompt.encode(), add_bos=False)
llm.reset()
t0 = time.perf_counter()
llm.eval(ids)
t1 = time.perf_counter()
out = []
for _ in range(tokens):
    tok = int(llm.sample(top_k=1, temp=0.0))
    out.append(tok)
    if tok == llm.token_eos():
        break
    llm.eval([tok])
t2 = time.perf_counter()
print(json.dumps({"prefill_tokens_per_s": len(ids) / (t1 - t0),
                  "decode_tokens_per_s": len(out) / (t2 - t1), "tokens": out,
                  "text": llm.detokenize(out).decode("utf-8", "replace")}))
"""


def run_json(cmd, env):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout[p.stdout.index("{"):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benches" / "results" / "cpu-batch1.json"))
    ap.add_argument("--skip-llama-cpp", action="store_true")
    a = ap.parse_args()

    exe = build()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", "/tmp"))
    base = [str(exe), "--device", "cpu", "--greedy", "--json", "--prompt", PROMPT]
    common = base + ["--max-tokens", str(a.tokens)]
    # First runs fetch the model and compress each scheme once; not measured.
    for _, args in CONFIGS:
        run_json(base + ["--max-tokens", "2"] + args, env)
    gguf = CACHE / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    py = None if a.skip_llama_cpp else llama_cpp_python()

    samples = {name: [] for name, _ in CONFIGS}
    if py:
        samples["llama.cpp"] = []
    reports = {}
    for _ in range(a.repeats):
        for name, args in CONFIGS:
            r = run_json(common + args, env)
            samples[name].append(r["decode_tokens_per_s"])
            reports[name] = r
        if py:
            r = run_json([str(py), "-c", LLAMA_CPP_RUN, str(gguf), str(a.threads), str(a.tokens), PROMPT], env)
            samples["llama.cpp"].append(r["decode_tokens_per_s"])
            reports["llama.cpp"] = r

    med = {k: statistics.median(v) for k, v in samples.items()}
    dense = med["dense"]
    rows = []
    for name, tps in med.items():
        r = reports[name]
        row = {
            "config": name,
            "decode_tokens_per_s": round(tps, 3),
            "samples": [round(s, 3) for s in samples[name]],
            "vs_dense": round(tps / dense, 3),
            "tokens": r.get("tokens"),
            "same_tokens_as_dense": r.get("tokens") == reports["dense"].get("tokens"),
        }
        if "llama.cpp" in med:
            row["vs_llama_cpp"] = round(tps / med["llama.cpp"], 3)
        if name != "llama.cpp":
            row["path"] = r.get("path")
            row["resident_weight_bytes"] = r["stats"]["weights_compressed_bytes"] or r["weights_dense_bytes"]
        rows.append(row)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    report = {
        "benchmark": "batch-1 greedy generation, CPU path",
        "command": " ".join(["python3", "benches/cpu/batch1.py"] + sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "machine": f"{cpu}, {os.cpu_count()} cores",
        "threads": a.threads,
        "model": gguf.name,
        "prompt": PROMPT,
        "new_tokens": a.tokens,
        "repeats": a.repeats,
        "llama_cpp_python": LLAMA_CPP_VERSION if py else None,
        "rows": rows,
    }
    text = json.dumps(report, indent=2)
    print(text)
    out = pathlib.Path(a.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    main()
