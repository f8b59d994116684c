#!/usr/bin/env python3
"""ember-serve throughput, time to first token and memory, as one JSON object.

Starts the given ember-serve binary (build it with `cargo build --release -p ember-serve`), and
measures, each in a fresh server on the CPU path:

- one model (SmolLM2-135M): generated tokens/s and p50/p95 time to first token with 1, 4 and 16
  concurrent streamed requests (batched decode: 16 sequences share every weight read);
- three models in one server (SmolLM2-135M, Gemma 3 270M and Qwen2.5-Coder-0.5B, each fetched
  once from PyPI by the server itself), requests spread over all three, for each scheme and each form the fused products read (`--form fast`:
  the transcoded fast form; `--form coded`: the entropy-coded tiles): tokens/s, and the
  process's idle and peak resident memory against the sum of the three models' dense BF16
  weights (the lossless run's dense size, the same denominator for every scheme).

Only the standard library: requests are plain HTTP with server-sent events. Set
`RAYON_NUM_THREADS` to fix the server's thread count (recorded as `threads`); the committed
results use one thread, so another process on the machine does not stall its products.

usage: python3 benches/serve/bench.py --bin target/release/ember-serve
           [--tokens 32] [--repeats 3] [--schemes lossless,int8] [--forms fast,coded] [--phases one,three]
           [--out benches/results/cpu-serve-three-models.json]
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

CACHE = os.environ.get("EMBER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ember")
# Packaged models, by the ids ember-serve fetches them by (`--model NAME=ID`).
SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
QWEN25 = "qwen2.5-coder-0.5b"
PROMPTS = [
    "The capital of France is",
    "Once upon a time there was",
    "The best way to learn a language is",
    "Water boils at a temperature of",
]


class Server:
    def __init__(self, binary, models, scheme, extra=()):
        args = [binary, "--device", "cpu", "--port", "0", "--scheme", scheme, "--max-batch", "16"] + list(extra)
        for name, path in models:
            args += ["--model", f"{name}={path}"]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        self.log = []
        for line in self.proc.stderr:
            self.log.append(line)
            if "listening on http://" in line:
                hostport = line.split("listening on http://", 1)[1].split()[0]
                self.host, port = hostport.rsplit(":", 1)
                self.port = int(port)
                break
        else:
            raise SystemExit("ember-serve did not start:\n" + "".join(self.log))

        self.idle = self.status()
        self.peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self.sampling = True
        threading.Thread(target=self.sample, daemon=True).start()

    def status(self):
        """The server's resident memory now, in bytes (`VmRSS`, `RssAnon`, `RssFile`)."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    out[key] = int(line.split()[1]) * 1024
        return out

    def sample(self):
        """Polls the server's /proc status: peaks of anonymous memory (what it allocates) and of
        file-backed pages (the mmapped containers, which the kernel can drop)."""
        while self.sampling:
            try:
                with open(f"/proc/{self.proc.pid}/status") as f:
                    for line in f:
                        key = line.split(":", 1)[0]
                        if key in self.peaks:
                            self.peaks[key] = max(self.peaks[key], int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.02)

    def stop(self):
        self.sampling = False
        self.proc.terminate()
        self.proc.wait(timeout=120)

    async def request(self, model, prompt, tokens):
        """One streamed completion: (seconds to the first text, completion tokens, seconds)."""
        body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        first, usage = None, None
        while True:
            line = await reader.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                first = time.perf_counter() - started
        writer.close()
        return first, (usage or {}).get("completion_tokens", 0), time.perf_counter() - started

    def metrics(self):
        import urllib.request
        text = urllib.request.urlopen(f"http://{self.host}:{self.port}/metrics").read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def wave(server, jobs, tokens):
    """All `jobs` ((model, prompt) pairs) at once: tokens/s over the wave and TTFT percentiles."""
    started = time.perf_counter()
    results = await asyncio.gather(*(server.request(m, p, tokens) for m, p in jobs))
    wall = time.perf_counter() - started
    generated = sum(r[1] for r in results)
    ttft = [r[0] for r in results if r[0] is not None]
    return {"sequences": len(jobs), "generated_tokens": generated, "seconds": wall, "tokens_per_s": generated / wall,
            "ttft_p50_s": pct(ttft, 50), "ttft_p95_s": pct(ttft, 95)}


def one_model(a):
    """One model (SmolLM2-135M, lossless), 1/4/16 concurrent sequences."""
    s = Server(a.bin, [("smollm2", SMOLLM2)], "lossless")
    try:
        asyncio.run(wave(s, [("smollm2", PROMPTS[0])], 4))  # warm-up
        # Interleaved repeats; each row is the median wave by tokens/s, the rest kept as samples.
        levels = (1, 4, 16)
        rows = [[] for _ in levels]
        for _ in range(a.repeats):
            for row, c in zip(rows, levels):
                row.append(asyncio.run(wave(s, [("smollm2", PROMPTS[i % 4]) for i in range(c)], a.tokens)))
        for i, waves in enumerate(rows):
            waves.sort(key=lambda w: w["tokens_per_s"])
            rows[i] = dict(waves[len(waves) // 2], samples_tokens_per_s=[w["tokens_per_s"] for w in waves])
        return {"model": "SmolLM2-135M-Instruct (lossless)", "rows": rows,
                "batch16_vs_batch1": rows[2]["tokens_per_s"] / rows[0]["tokens_per_s"]}
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--schemes", default="lossless,int8")
    ap.add_argument("--forms", default="fast,coded", help="what the fused products read (ember-serve --form)")
    ap.add_argument("--repeats", type=int, default=3, help="waves per concurrency level (median reported)")
    ap.add_argument("--phases", default="one,three",
                    help="one: one model at 1/4/16 streams; three: three models on one budget")
    ap.add_argument("--out")
    a = ap.parse_args()
    report = {"benchmark": "ember-serve on the CPU path", "command": " ".join(sys.argv),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
              "tokens_per_request": a.tokens,
              # The server's worker threads: its rayon pool (RAYON_NUM_THREADS when set).
              "threads": int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count())}

    phases = set(a.phases.split(","))
    if "one" in phases:
        report["one_model"] = one_model(a)

    # Three models, one budget, per scheme.
    three = [("smollm2", SMOLLM2), ("gemma3", GEMMA3), ("qwen2.5-coder", QWEN25)]
    report["three_models"] = []
    combos = [(s, f) for s in a.schemes.split(",") for f in a.forms.split(",")] if "three" in phases else []
    for scheme, form in combos:
        s = Server(a.bin, three, scheme, ["--form", form])
        try:
            jobs = [(three[i % 3][0], PROMPTS[(i // 3) % 4]) for i in range(12)]
            row = asyncio.run(wave(s, jobs, a.tokens))
            m = s.metrics()
            dense = sum(v for k, v in m.items() if k.startswith("ember_dense_weight_bytes"))
            peak = next(v for k, v in m.items() if k.startswith("ember_memory_peak_bytes"))
            source = next(k for k in m if k.startswith("ember_memory_peak_bytes"))
            row.update({"scheme": scheme, "form": form, "idle_rss_bytes": s.idle.get("VmRSS"),
                        "dense_weight_bytes_as_stored": dense, "memory_peak_bytes": peak,
                        "memory_source": source.split('source="', 1)[1].rstrip('"}'),
                        "anon_memory_peak_bytes": s.peaks["RssAnon"],
                        "file_backed_peak_bytes": s.peaks["RssFile"],
                        "cache_peak_bytes": m.get("ember_cache_peak_bytes"), "cache_budget_bytes": m.get("ember_cache_budget_bytes")})
            report["three_models"].append(row)
        finally:
            s.stop()

    # One denominator for every scheme: the models' dense BF16 weights, as the lossless
    # containers hold them (an int8 container stores the GGUFs' kept codes as F32 tensors, so
    # its own "as stored" size is twice that).
    lossless = [r for r in report["three_models"] if r["scheme"] == "lossless"]
    for row in report["three_models"]:
        dense = (lossless[0] if lossless else row)["dense_weight_bytes_as_stored"]
        row.update({"dense_weight_bytes_sum": dense, "peak_vs_dense_sum": row["memory_peak_bytes"] / dense,
                    "idle_vs_dense_sum": row["idle_rss_bytes"] / dense,
                    "anon_peak_vs_dense_sum": row["anon_memory_peak_bytes"] / dense})

    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
