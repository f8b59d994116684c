"""Writes dequant_reference.json: random blocks of every quantized type this crate dequantizes,
with the values gguf-py's numpy reference (`gguf.quants.dequantize`) gives for them.

    python -m venv venv && venv/bin/pip install numpy gguf==0.17.1
    venv/bin/python make_dequant_reference.py

Block bytes are random except the f16 scale fields, which are set to small finite values (a
random f16 can be NaN or inf, which says nothing about the arithmetic).
"""
import json

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# type -> (block bytes, byte offsets of f16 scale fields)
LAYOUT = {
    T.Q4_0: (18, [0]),
    T.Q4_1: (20, [0, 2]),
    T.Q5_0: (22, [0]),
    T.Q5_1: (24, [0, 2]),
    T.Q8_0: (34, [0]),
    T.Q2_K: (84, [80, 82]),
    T.Q3_K: (110, [108]),
    T.Q4_K: (144, [0, 2]),
    T.Q5_K: (176, [0, 2]),
    T.Q6_K: (210, [208]),
}
BLOCKS = 3

rng = np.random.default_rng(20240601)
out = {}
for t, (size, scales) in LAYOUT.items():
    raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
    for b in range(BLOCKS):
        for off in scales:
            v = np.float16(rng.normal(0, 0.02))
            raw[b, off:off + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    values = dequantize(raw.reshape(-1), t).astype(np.float32).reshape(-1)
    out[t.name] = {"bytes": raw.tobytes().hex(), "values": [float(x) for x in values]}

with open("dequant_reference.json", "w") as f:
    json.dump(out, f)
