#!/usr/bin/env python3
"""turns.py: time to first token of each turn of a stored conversation (/v1/responses).

    python3 clients/loadgen/turns.py --base-url http://127.0.0.1:8000 [--turns 20]
        [--message-tokens 2048] [--image-size 448] [--max-output-tokens 16] [--json FILE]

Each turn sends one new user message (about --message-tokens tokens of random words, and a
picture when --image-size > 0) with previous_response_id set to the last answer, streams the
answer and records the time from sending to the first response.output_text.delta, the input
tokens, the cached input tokens the server reports (usage.input_tokens_details.cached_tokens)
and its x-mmmamba-state header. Run it against a daemon with the state cache and one with
--state-cache-bytes 0 to compare; the first turn has nothing to resume in both.

Standard library only.
"""
import argparse
import base64
import json
import random
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib

WORDS = ("state space model linear attention memory recurrent token image picture answer question "
         "server stream batch decode prefill chunk kernel tensor bandwidth latency").split()


def png(w, h, seed):
    """A picture of coloured bands (PNG bytes), different for every seed."""
    rng = random.Random(seed)
    cols = [bytes(rng.randrange(256) for _ in range(3)) for _ in range(4)]
    rows = []
    for y in range(h):
        band = cols[(y * 4) // h]
        rows.append(b"\0" + band * w)
    raw = zlib.compress(b"".join(rows), 6)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def tokens_per_word(base, key, rng):
    """Measured with the server's /tokenize (vLLM's): so that a message holds about the asked
    number of tokens whatever the tokenizer."""
    sample = " ".join(rng.choice(WORDS) for _ in range(400))
    req = urllib.request.Request(base + "/tokenize", data=json.dumps({"prompt": sample}).encode(),
                                 headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req, timeout=60) as r:
        return max(json.load(r)["count"], 1) / 400.0


def model_id(base, key):
    req = urllib.request.Request(base + "/v1/models")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["data"][0]["id"]


def turn(base, key, model, prev, text, image, max_out, timeout):
    content = [{"type": "input_text", "text": text}]
    if image:
        content.append({"type": "input_image",
                        "image_url": "data:image/png;base64," + base64.b64encode(image).decode()})
    body = {"model": model, "input": [{"role": "user", "content": content}], "stream": True,
            "max_output_tokens": max_out, "temperature": 0}
    if prev:
        body["previous_response_id"] = prev
    req = urllib.request.Request(base + "/v1/responses", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", "Bearer " + key)
    t0 = time.perf_counter()
    ttft = None
    rid, usage, state = None, {}, None
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        sys.exit("turns.py: HTTP %d: %s" % (e.code, e.read().decode(errors="replace")))
    with r:
        state = r.headers.get("x-mmmamba-state")
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data:"):
                continue
            ev = json.loads(line[5:])
            if ev.get("type") == "response.output_text.delta" and ttft is None:
                ttft = time.perf_counter() - t0
            if ev.get("type") == "response.created":
                rid = ev["response"]["id"]
            if ev.get("type") in ("response.completed", "response.incomplete"):
                usage = ev["response"].get("usage") or {}
    total = time.perf_counter() - t0
    return rid, ttft if ttft is not None else total, total, usage, state


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--message-tokens", type=int, default=2048, help="about this many tokens of text per turn")
    ap.add_argument("--image-size", type=int, default=448, help="side of the picture per turn (0: none)")
    ap.add_argument("--max-output-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", default="", help="write the per-turn rows here")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    base = a.base_url.rstrip("/")
    n_words = max(1, round(a.message_tokens / tokens_per_word(base, a.api_key, random.Random(0))))
    model = model_id(base, a.api_key)
    prev, rows = None, []
    print("%-4s %9s %9s %8s %8s  %s" % ("turn", "ttft_ms", "total_ms", "input", "cached", "state"))
    for n in range(1, a.turns + 1):
        text = " ".join(rng.choice(WORDS) for _ in range(n_words))
        image = png(a.image_size, a.image_size, a.seed * 1000 + n) if a.image_size else None
        rid, ttft, total, usage, state = turn(base, a.api_key, model, prev, text, image,
                                              a.max_output_tokens, a.timeout)
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
        rows.append({"turn": n, "ttft_ms": ttft * 1e3, "total_ms": total * 1e3,
                     "input_tokens": usage.get("input_tokens", 0), "cached_tokens": cached, "state": state})
        print("%-4d %9.1f %9.1f %8d %8d  %s" % (n, ttft * 1e3, total * 1e3, usage.get("input_tokens", 0), cached,
                                               state or "-"), flush=True)
        prev = rid
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"label": a.label, "message_tokens": a.message_tokens, "image_size": a.image_size,
                       "turns": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
