#!/usr/bin/env python3
"""fake_openai.py: a small OpenAI-compatible server on the standard library,
for testing clients without a model: the load generator, the Python SDK, the
curl scripts and the npm example.

It streams chat.completion.chunk / text_completion SSE with known timing: the
first content token `--ttft-ms` after the request arrived (plus
`--prefill-us-per-token` per prompt token), then one token every `--itl-ms`
after the first, each at its absolute target time (so sleep jitter does not
accumulate). With ignore_eos it emits exactly max_tokens tokens, otherwise
min(max_tokens, --eos-after). Token k is the word "tok<k> ". prompt_tokens is
the number of ids of a token-id prompt, or of whitespace-separated words
(plus the image count for chat). Errors are OpenAI error objects.

Knobs for error paths: --fail-every N answers every Nth generation request
with 429 (Retry-After: 1); --api-key K requires "Authorization: Bearer K";
a request whose "user" field is "stream-error" gets an error event after two
tokens; "user": "slow-first" waits --ttft-ms x 20 before the first token.

Usage: fake_openai.py [--port 0] [--port-file F] [--ttft-ms 100] [--itl-ms 20]
The chosen port is printed on stdout's first line and written to --port-file.
"""
import argparse
import base64
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "mmmamba-fake"


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.n_generate = 0
        self.last_body = None
        self.max_running = 0
        self.running = 0


def count_prompt(body, chat):
    """Prompt tokens as the fake counts them, and the images seen (mime, bytes)."""
    images = []
    if not chat:
        p = body.get("prompt")
        if isinstance(p, list):
            return len(p), images
        return len(str(p).split()), images
    if not body.get("messages"):
        raise ValueError("messages must be a non-empty array")
    n = 0
    for m in body["messages"]:
        c = m.get("content")
        if isinstance(c, str):
            n += len(c.split())
            continue
        for part in c or []:
            if part.get("type") == "text":
                n += len(part.get("text", "").split())
            elif part.get("type") == "image_url":
                url = part.get("image_url", {}).get("url", "")
                if not url.startswith("data:image/") or ";base64," not in url:
                    raise ValueError("image_url must be a data:image/...;base64, URL")
                head, data = url.split(";base64,", 1)
                raw = base64.b64decode(data, validate=True)
                images.append((head[5:], len(raw)))
                n += 1
    return n, images


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1"

    def log_message(self, fmt, *a):  # quiet
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ---- helpers ----
    def send_json(self, status, obj, extra=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_error_obj(self, status, message, etype, code=None, param=None, extra=None):
        self.send_json(status, {"error": {"message": message, "type": etype,
                                          "param": param, "code": code}}, extra)

    def chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def authorized(self):
        key = self.server.state.args.api_key
        if not key:
            return True
        if self.headers.get("Authorization") == "Bearer " + key:
            return True
        self.send_error_obj(401, "invalid API key", "authentication_error", "invalid_api_key")
        return False

    # ---- routes ----
    def do_GET(self):
        if self.path == "/health":
            return self.send_json(200, {"status": "ok"})
        if self.path == "/_stats":  # the tests' view of what arrived (no key needed)
            st = self.server.state
            return self.send_json(200, {"max_running": st.max_running,
                                        "n_generate": st.n_generate,
                                        "last_body": st.last_body})
        if not self.authorized():
            return None
        if self.path == "/v1/models":
            return self.send_json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "mmmamba"}]})
        return self.send_error_obj(404, "no route " + self.path, "invalid_request_error")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        if not self.authorized():
            return None
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self.send_error_obj(404, "no route " + self.path, "invalid_request_error")
        chat = self.path == "/v1/chat/completions"
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            prompt_tokens, images = count_prompt(body, chat)
        except (ValueError, TypeError, AttributeError) as e:
            return self.send_error_obj(400, "bad request: %s" % e, "invalid_request_error")
        st = self.server.state
        with st.lock:
            st.n_generate += 1
            k = st.n_generate
            st.last_body = body
        if st.args.fail_every and k % st.args.fail_every == 0:
            return self.send_error_obj(429, "too many requests", "rate_limit_error",
                                       extra={"Retry-After": "1"})
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        n_out = max_tokens if body.get("ignore_eos") else min(max_tokens, st.args.eos_after)
        finish = "length" if n_out == max_tokens else "stop"
        with st.lock:
            st.running += 1
            st.max_running = max(st.max_running, st.running)
        try:
            if body.get("stream"):
                self.stream(body, chat, prompt_tokens, images, n_out, finish)
            else:
                self.whole(body, chat, prompt_tokens, images, n_out, finish)
        finally:
            with st.lock:
                st.running -= 1
        return None

    def words(self, body, images, n_out):
        """The generated pieces; the first says what the server understood."""
        out = ["tok%d " % k for k in range(n_out)]
        if images and out:
            out[0] = "[%s %d bytes] " % images[0]
        return out

    def whole(self, body, chat, prompt_tokens, images, n_out, finish):
        slow = 20 if body.get("user") == "slow-first" else 1
        time.sleep(self.server.state.args.ttft_ms / 1000 * slow)
        text = "".join(self.words(body, images, n_out))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_out,
                 "total_tokens": prompt_tokens + n_out}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": finish}
            obj = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                   "model": body.get("model", MODEL), "choices": [choice], "usage": usage}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                   "model": body.get("model", MODEL), "choices": [choice], "usage": usage}
        self.send_json(200, obj)

    def stream(self, body, chat, prompt_tokens, images, n_out, finish):
        args = self.server.state.args
        t0 = time.monotonic()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        created = int(time.time())
        model = body.get("model", MODEL)
        ttft = args.ttft_ms / 1000 * (20 if body.get("user") == "slow-first" else 1)
        ttft += args.prefill_us_per_token * prompt_tokens / 1e6

        def event(obj):
            self.chunk("data: " + json.dumps(obj) + "\n\n")

        def piece(text, fin=None):
            if chat:
                delta = {"content": text} if text is not None else {}
                return {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                        "created": created, "model": model,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": fin}]}
            return {"id": "cmpl-fake", "object": "text_completion", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "text": text or "", "logprobs": None,
                                 "finish_reason": fin}]}

        try:
            if chat:  # the role comes first, at once, with empty content
                first = piece("")
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                event(first)
            self.chunk(": ping\n\n")  # a keep-alive comment during "prefill"
            t_first = t0 + ttft
            for k, w in enumerate(self.words(body, images, n_out)):
                # Token k at first + k * ITL, the first's actual send time as the
                # origin: a late first token (a loaded machine) shifts the rest
                # instead of squeezing their gaps, and jitter never accumulates.
                target = t_first + k * args.itl_ms / 1000
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if body.get("user") == "stream-error" and k == 2:
                    event({"error": {"message": "engine failed", "type": "server_error",
                                     "param": None, "code": None}})
                    self.chunk("")  # end of the chunked body
                    return
                event(piece(w))
                if k == 0:
                    t_first = max(t_first, time.monotonic())
            event(piece(None if chat else "", finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                u = piece(None)
                u["choices"] = []
                u["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": n_out,
                              "total_tokens": prompt_tokens + n_out}
                event(u)
            self.chunk("data: [DONE]\n\n")
            self.chunk("")
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--ttft-ms", type=float, default=100)
    ap.add_argument("--itl-ms", type=float, default=20)
    ap.add_argument("--prefill-us-per-token", type=float, default=0,
                    help="adds this many microseconds per prompt token to the TTFT")
    ap.add_argument("--eos-after", type=int, default=1 << 30)
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--api-key")
    args = ap.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 4096
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.state = State(args)
    port = srv.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    print(port, flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
