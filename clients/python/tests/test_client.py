"""Tests of mmmamba_client against the fake OpenAI server
(tests/clients/fake_openai.py), whose answers are known exactly, and, when
MMMAMBA_TEST_BASE_URL names a running mmmambad, against the real daemon.

Run: PYTHONPATH=clients/python python3 -m unittest discover -s clients/python/tests
"""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(PKG))
FAKE = os.path.join(ROOT, "tests", "clients", "fake_openai.py")
sys.path.insert(0, PKG)

import mmmamba_client as mc  # noqa: E402
from mmmamba_client import sse  # noqa: E402


def tiny_png(w=4, h=3):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = b"".join(b"\0" + bytes([10, 200, 30]) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Fake:
    """A fake server in a subprocess, stopped by stop()."""

    def __init__(self, *args):
        self.dir = tempfile.mkdtemp()
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([sys.executable, FAKE, "--port-file", port_file] + list(args),
                                     stdout=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        with open(port_file) as f:
            self.url = "http://127.0.0.1:%d" % int(f.read())

    def stats(self):
        with urllib.request.urlopen(self.url + "/_stats") as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


class SseTest(unittest.TestCase):
    def test_line_endings_and_comments(self):
        raw = io.BufferedReader(io.BytesIO(
            b"data: a\n\n: ping\n\ndata: b\r\ndata: c\r\n\r\nevent: x\rdata: d\r\rdata: [DONE]\n\n"))
        self.assertEqual(list(sse.iter_events(raw)), ["a", "b\nc", "d", "[DONE]"])

    def test_split_reads(self):
        class Slow:
            def __init__(self, data):
                self.data = data

            def read(self, n):
                b, self.data = self.data[:1], self.data[1:]
                return b
        data = b"data: x\r\n\r\ndata: y\r\rdata: z\n\n"
        self.assertEqual(list(sse.iter_events(Slow(data))), ["x", "y", "z"])


class ImageTest(unittest.TestCase):
    def test_data_url_from_bytes_and_path(self):
        png = tiny_png()
        url = mc.image_data_url(png)
        self.assertTrue(url.startswith("data:image/png;base64,iVBORw0KGgo"))
        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(png)
            f.flush()
            self.assertEqual(mc.image_data_url(f.name), url)
        self.assertTrue(mc.image_data_url(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;"))
        with self.assertRaises(ValueError):
            mc.image_data_url(b"hello")
        m = mc.user_message("what?", images=[png])
        self.assertEqual(m["content"][0]["type"], "image_url")
        self.assertEqual(m["content"][1], {"type": "text", "text": "what?"})
        self.assertEqual(mc.user_message("hi"), {"role": "user", "content": "hi"})


class FakeServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = Fake("--ttft-ms", "100", "--itl-ms", "5")
        cls.c = mc.Client(cls.fake.url, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()

    def test_models_and_health(self):
        self.assertEqual([m["id"] for m in self.c.models()], ["mmmamba-fake"])
        self.assertTrue(self.c.health())

    def test_chat_whole(self):
        r = self.c.chat([{"role": "user", "content": "hi there"}], max_tokens=3, ignore_eos=True)
        self.assertEqual(r["object"], "chat.completion")
        self.assertEqual(r["choices"][0]["message"]["content"], "tok0 tok1 tok2 ")
        self.assertEqual(r["usage"], {"prompt_tokens": 2, "completion_tokens": 3,
                                      "total_tokens": 5})
        self.assertEqual(self.fake.stats()["last_body"]["model"], "mmmamba-fake")

    def test_chat_stream(self):
        t0 = time.monotonic()
        s = self.c.chat([mc.user_message("a b c")], stream=True, max_tokens=4, ignore_eos=True)
        chunks = list(s)
        self.assertGreaterEqual(time.monotonic() - t0, 0.1)
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks))
        self.assertEqual(s.usage["completion_tokens"], 4)
        self.assertEqual(s.finish_reason, "length")
        self.assertTrue(s.done)
        s2 = self.c.chat([mc.user_message("a b c")], stream=True, max_tokens=4, ignore_eos=True)
        self.assertEqual("".join(s2.text()), "tok0 tok1 tok2 tok3 ")
        self.assertEqual(self.fake.stats()["last_body"]["stream_options"], {"include_usage": True})

    def test_chat_image(self):
        png = tiny_png()
        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            f.write(png)
            f.flush()
            for img in (png, f.name):
                r = self.c.chat([mc.user_message("what is this?", images=[img])], max_tokens=2)
                self.assertEqual(r["choices"][0]["message"]["content"],
                                 "[image/png %d bytes] tok1 " % len(png))

    def test_completions(self):
        r = self.c.completions([1, 2, 3, 4], max_tokens=2)
        self.assertEqual(r["object"], "text_completion")
        self.assertEqual(r["choices"][0]["text"], "tok0 tok1 ")
        self.assertEqual(r["usage"]["prompt_tokens"], 4)
        s = self.c.completions("once upon a time", stream=True, max_tokens=3)
        self.assertEqual("".join(s.text()), "tok0 tok1 tok2 ")
        self.assertEqual(s.usage["prompt_tokens"], 4)

    def test_bad_request(self):
        with self.assertRaises(mc.BadRequestError) as cm:
            self.c.chat([{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}}]}])
        e = cm.exception
        self.assertEqual(e.status, 400)
        self.assertEqual(e.type, "invalid_request_error")
        self.assertIn("data:image", e.message)
        self.assertEqual(set(e.error), {"message", "type", "param", "code"})

    def test_not_found(self):
        with self.assertRaises(mc.NotFoundError) as cm:
            self.c._json("GET", "/v1/nothing")
        self.assertEqual(cm.exception.status, 404)

    def test_stream_error_event(self):
        s = self.c.chat([mc.user_message("x")], stream=True, max_tokens=5, user="stream-error")
        got = []
        with self.assertRaises(mc.StreamError) as cm:
            for t in s.text():
                got.append(t)
        self.assertEqual(got, ["tok0 ", "tok1 "])
        self.assertEqual(cm.exception.message, "engine failed")
        self.assertEqual(cm.exception.type, "server_error")

    def test_timeout(self):
        c = mc.Client(self.fake.url, timeout=0.5)
        s = c.chat([mc.user_message("x")], stream=True, max_tokens=2, user="slow-first")
        with self.assertRaises(mc.APITimeoutError):
            list(s)
        with self.assertRaises(mc.APITimeoutError):
            c.chat([mc.user_message("x")], max_tokens=2, user="slow-first", model="m")

    def test_connection_refused(self):
        with self.assertRaises(mc.APIConnectionError):
            mc.Client("http://127.0.0.1:9", model="m", timeout=5).chat([mc.user_message("x")])

    def test_base_url_with_v1(self):
        self.assertEqual(mc.Client(self.fake.url + "/v1/").base_url, self.fake.url)

    def _cli(self, args, stdin=""):
        env = dict(os.environ, PYTHONPATH=PKG)
        return subprocess.run([sys.executable, "-m", "mmmamba_client", "--base-url",
                               self.fake.url] + args, input=stdin, capture_output=True,
                              text=True, env=env, timeout=60)

    def test_cli_chat_image_once(self):
        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            f.write(tiny_png())
            f.flush()
            p = self._cli(["chat", "--image", f.name, "--system", "Be brief.", "--max-tokens",
                           "3", "what is this?"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("[image/png"), p.stdout)
        body = self.fake.stats()["last_body"]
        self.assertEqual(body["messages"][0], {"role": "system", "content": "Be brief."})
        self.assertTrue(body["stream"])

    def test_cli_chat_multi_turn(self):
        p = self._cli(["chat", "--system", "S", "--max-tokens", "2"],
                      stdin="first question\n\nsecond one\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "tok0 tok1 \ntok0 tok1 \n")
        msgs = self.fake.stats()["last_body"]["messages"]
        self.assertEqual([m["role"] for m in msgs], ["system", "user", "assistant", "user"])
        self.assertEqual(msgs[2]["content"], "tok0 tok1 ")
        self.assertEqual(msgs[3]["content"], "second one")

    def test_cli_complete_and_models(self):
        p = self._cli(["complete", "--max-tokens", "2", "--no-stream", "hello"])
        self.assertEqual((p.returncode, p.stdout), (0, "tok0 tok1 \n"))
        p = self._cli(["models"])
        self.assertEqual((p.returncode, p.stdout), (0, "mmmamba-fake\n"))

    def test_cli_error_exit(self):
        env = dict(os.environ, PYTHONPATH=PKG)
        p = subprocess.run([sys.executable, "-m", "mmmamba_client", "--base-url",
                            "http://127.0.0.1:9", "--model", "m", "chat", "--once", "x"],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("error:", p.stderr)


class KeyAndRateLimitTest(unittest.TestCase):
    def test_api_key_from_environment(self):
        fake = Fake("--api-key", "sekrit", "--ttft-ms", "1", "--itl-ms", "1")
        saved = {k: os.environ.pop(k, None) for k in ("MMMAMBA_API_KEY", "OPENAI_API_KEY")}
        try:
            with self.assertRaises(mc.AuthenticationError) as cm:
                mc.Client(fake.url).models()
            self.assertEqual(cm.exception.status, 401)
            os.environ["OPENAI_API_KEY"] = "sekrit"
            self.assertEqual(len(mc.Client(fake.url).models()), 1)
            os.environ["MMMAMBA_API_KEY"] = "wrong"  # MMMAMBA_API_KEY wins
            with self.assertRaises(mc.AuthenticationError):
                mc.Client(fake.url).models()
            self.assertEqual(len(mc.Client(fake.url, api_key="sekrit").models()), 1)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None)
                if v is not None:
                    os.environ[k] = v
            fake.stop()

    def test_rate_limit(self):
        fake = Fake("--fail-every", "1")
        try:
            with self.assertRaises(mc.RateLimitError) as cm:
                mc.Client(fake.url).chat([mc.user_message("x")], stream=True)
            self.assertEqual(cm.exception.status, 429)
            self.assertEqual(cm.exception.retry_after, 1.0)
        finally:
            fake.stop()


@unittest.skipUnless(os.environ.get("MMMAMBA_TEST_BASE_URL"), "no MMMAMBA_TEST_BASE_URL daemon")
class DaemonTest(unittest.TestCase):
    """Against a running mmmambad (tests/clients/check_python_sdk.sh starts one)."""

    @classmethod
    def setUpClass(cls):
        cls.c = mc.Client(os.environ["MMMAMBA_TEST_BASE_URL"], timeout=120)

    def test_models_health(self):
        self.assertTrue(self.c.health())
        self.assertTrue(self.c.models())

    def test_chat_whole_and_stream_agree(self):
        msgs = [mc.user_message("Hello there")]
        r = self.c.chat(msgs, max_tokens=8, temperature=0)
        self.assertEqual(r["object"], "chat.completion")
        self.assertIn(r["choices"][0]["finish_reason"], ("stop", "length"))
        s = self.c.chat(msgs, stream=True, max_tokens=8, temperature=0)
        text = "".join(s.text())
        self.assertEqual(text, r["choices"][0]["message"]["content"])
        self.assertEqual(s.usage["completion_tokens"], r["usage"]["completion_tokens"])

    def test_ignore_eos_length(self):
        r = self.c.chat([mc.user_message("Hi")], max_tokens=6, ignore_eos=True)
        self.assertEqual(r["usage"]["completion_tokens"], 6)
        self.assertEqual(r["choices"][0]["finish_reason"], "length")

    def test_image(self):
        r = self.c.chat([mc.user_message("what is this?", images=[tiny_png(32, 24)])],
                        max_tokens=4)
        plain = self.c.chat([mc.user_message("what is this?")], max_tokens=4)
        # The image's tokens count in the prompt.
        self.assertGreater(r["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"] + 8)

    def test_completions_token_ids(self):
        r = self.c.completions([1, 1029, 17, 40], max_tokens=3, ignore_eos=True)
        self.assertEqual(r["usage"], {"prompt_tokens": 4, "completion_tokens": 3,
                                      "total_tokens": 7,
                                      "prompt_tokens_details": {"cached_tokens": 0}})

    def test_errors(self):
        with self.assertRaises(mc.BadRequestError) as cm:
            self.c.chat([mc.user_message("x")], tools=[{"type": "function"}])
        self.assertTrue(cm.exception.message)
        with self.assertRaises(mc.APIError) as cm:
            self.c.chat([mc.user_message("x")], model="no-such-model")
        self.assertIn(cm.exception.status, (400, 404))


if __name__ == "__main__":
    unittest.main()
