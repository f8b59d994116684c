"""Drives a running ember-serve with the official `openai` client (and plain HTTP for what the
client cannot send), and prints one JSON object of what it saw; `tests/openai.rs` asserts on it.

usage: openai_client.py BASE_URL API_KEY SCENARIO MODEL [MODEL2]
scenarios: basic, concurrent, bad_input, cancel
"""

import asyncio
import http.client
import json
import sys
import threading
import time
import urllib.parse

import openai

BASE, KEY, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3]
MODELS = sys.argv[4:]
URL = urllib.parse.urlparse(BASE)

CHAT_PROMPT = "What is the capital of France?"


def client():
    return openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=600)


def raw(method, path, body=None, headers=None, key=KEY):
    """One plain HTTP request: (status, parsed JSON body or text)."""
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=600)
    h = {"Content-Type": "application/json"}
    if key is not None:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data.decode("utf-8", "replace")


def metric(name, model=None):
    """The value of metric `name` (for `model`, when given) in /metrics, or None."""
    _, text = raw("GET", "/metrics", key=None)
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] == name and (model is None or f'model="{model}"' in series):
            return float(value)
    return None


def basic():
    c = client()
    model = MODELS[0]
    ids = [m.id for m in c.models.list().data]
    msgs = [{"role": "user", "content": CHAT_PROMPT}]
    whole = c.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0)
    pieces, usage, finish = [], None, None
    stream = c.chat.completions.create(
        model=model, messages=msgs, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    text = c.completions.create(model=model, prompt="The capital of France is Paris. The capital of Germany is", max_tokens=4, temperature=0)
    stopped = c.completions.create(
        model=model, prompt="The capital of France is Paris. The capital of Germany is", max_tokens=12, temperature=0, stop=["."]
    )
    seeded = [
        c.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0.9, seed=7).choices[0].text
        for _ in range(2)
    ]
    return {
        "models": ids,
        "chat": whole.choices[0].message.content,
        "chat_finish": whole.choices[0].finish_reason,
        "chat_usage": whole.usage.model_dump(),
        "stream": "".join(pieces),
        "stream_finish": finish,
        "stream_usage": usage,
        "completion": text.choices[0].text,
        "stopped": stopped.choices[0].text,
        "stopped_finish": stopped.choices[0].finish_reason,
        "seeded": seeded,
    }


PROMPTS = [
    "The capital of France is",
    "One, two, three,",
    "The best way to learn is",
    "def add(a, b):",
    "Water boils at",
    "The opposite of hot is",
    "My favourite colour is",
    "In the morning I",
]


async def concurrent():
    """32 requests spread over the models, at most 16 in flight, against each one alone."""
    sync = client()
    alone = {}
    for m in MODELS:
        for p in PROMPTS[:4]:
            alone[(m, p)] = sync.completions.create(model=m, prompt=p, max_tokens=8, temperature=0).choices[0].text
    ac = openai.AsyncOpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=600)
    gate = asyncio.Semaphore(16)
    jobs = [(MODELS[i % len(MODELS)], PROMPTS[(i // len(MODELS)) % 4]) for i in range(32)]

    async def one(m, p):
        async with gate:
            r = await ac.completions.create(model=m, prompt=p, max_tokens=8, temperature=0)
            return r.choices[0].text

    started = time.time()
    got = await asyncio.gather(*(one(m, p) for m, p in jobs))
    secs = time.time() - started
    mismatches = [
        {"model": m, "prompt": p, "alone": alone[(m, p)], "together": g} for (m, p), g in zip(jobs, got) if g != alone[(m, p)]
    ]
    return {
        "requests": len(jobs),
        "answers": len(got),
        "mismatches": mismatches,
        "seconds": secs,
        "cache_peak_bytes": metric("ember_cache_peak_bytes"),
        "cache_budget_bytes": metric("ember_cache_budget_bytes"),
    }


def bad_input():
    model = MODELS[0]
    ok = json.dumps({"model": model, "prompt": "Hi", "max_tokens": 2, "temperature": 0})
    cases = {
        "malformed_json": raw("POST", "/v1/completions", "{not json"),
        "wrong_type": raw("POST", "/v1/completions", json.dumps({"model": model, "prompt": "Hi", "max_tokens": "two"})),
        "missing_field": raw("POST", "/v1/chat/completions", json.dumps({"model": model})),
        "unknown_model": raw("POST", "/v1/completions", json.dumps({"model": "no-such-model", "prompt": "Hi"})),
        "max_tokens_over_cap": raw("POST", "/v1/completions", json.dumps({"model": model, "prompt": "Hi", "max_tokens": 10**6})),
        "prompt_over_context": raw("POST", "/v1/completions", json.dumps({"model": model, "prompt": "word " * 5000, "max_tokens": 4})),
        "body_over_cap": raw("POST", "/v1/completions", "x" * (3 << 20)),
        "no_key": raw("POST", "/v1/completions", ok, key=None),
        "wrong_key": raw("POST", "/v1/completions", ok, key=KEY + "x"),
        "models_without_key": raw("GET", "/v1/models", key=None),
    }
    out = {name: {"status": s, "body": b} for name, (s, b) in cases.items()}

    # A flood of malformed requests from several threads, then a normal one.
    statuses = []
    lock = threading.Lock()

    def flood(n):
        for i in range(n):
            s, _ = raw("POST", "/v1/chat/completions", "{" * (i % 7 + 1))
            with lock:
                statuses.append(s)

    threads = [threading.Thread(target=flood, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["flood_statuses"] = sorted(set(statuses))
    out["flood_count"] = len(statuses)
    for name, (s, b) in {"after_flood": raw("POST", "/v1/completions", ok), "health": raw("GET", "/health", key=None)}.items():
        out[name] = {"status": s, "body": b}
    return out


def cancel():
    """A streamed request dropped after two chunks frees its slot; the next request is served."""
    model = MODELS[0]
    before = metric("ember_cancelled_total", model) or 0
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=600)
    body = json.dumps({"model": model, "prompt": "Tell me a long story about", "max_tokens": 400, "temperature": 0, "stream": True})
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json", "Authorization": "Bearer " + KEY})
    r = conn.getresponse()
    chunks = 0
    while chunks < 2:
        line = r.fp.readline()
        if line.startswith(b"data: "):
            chunks += 1
    conn.sock.close()
    conn.close()
    deadline = time.time() + 120
    after = before
    while time.time() < deadline:
        after = metric("ember_cancelled_total", model) or 0
        if after > before and (metric("ember_running_sequences", model) or 0) == 0:
            break
        time.sleep(0.2)
    nxt = client().completions.create(model=model, prompt="Hello", max_tokens=2, temperature=0)
    return {
        "chunks_read": chunks,
        "cancelled_before": before,
        "cancelled_after": after,
        "running_after": metric("ember_running_sequences", model),
        "next_served": nxt.choices[0].finish_reason,
    }


if __name__ == "__main__":
    result = {"basic": basic, "bad_input": bad_input, "cancel": cancel}.get(SCENARIO)
    out = asyncio.run(concurrent()) if SCENARIO == "concurrent" else result()
    print(json.dumps(out))
