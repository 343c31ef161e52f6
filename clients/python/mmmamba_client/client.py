"""The client: OpenAI-compatible chat and completions over the standard library.

Design: one small class over urllib. Non-streaming calls return the server's
JSON as dicts, exactly as the API documents them (no wrapper classes to keep
in step with the server); streaming calls return a Stream, an iterator of the
chunk dicts that closes its connection when exhausted or closed. The base URL
and API key come from the arguments, else from the environment
(MMMAMBA_BASE_URL, then OPENAI_BASE_URL; MMMAMBA_API_KEY, then OPENAI_API_KEY).
"""
import base64
import json
import mimetypes
import os
import socket
import urllib.error
import urllib.request

from . import sse
from .errors import (APIConnectionError, APIError, APITimeoutError, StreamError,
                     error_for_status)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def image_data_url(image, mime=None):
    """A data: URL for an image given as a path (str or os.PathLike) or bytes.

    The MIME type comes from `mime`, else the bytes' signature (PNG, JPEG,
    GIF, WebP), else the file name.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        data, name = bytes(image), None
    else:
        name = os.fspath(image)
        with open(name, "rb") as f:
            data = f.read()
    if mime is None:
        for magic, m in _MAGIC:
            if data.startswith(magic):
                mime = m
                break
        else:
            if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
                mime = "image/webp"
            elif name:
                mime = mimetypes.guess_type(name)[0]
    if not mime or not mime.startswith("image/"):
        raise ValueError("not a recognised image (PNG, JPEG, GIF, WebP): %r" % (name or "bytes"))
    return "data:%s;base64,%s" % (mime, base64.b64encode(data).decode("ascii"))


def image_part(image, mime=None):
    """A content part {"type": "image_url", ...} for a path or bytes."""
    return {"type": "image_url", "image_url": {"url": image_data_url(image, mime)}}


def user_message(text, images=()):
    """A user message: the images (paths or bytes) first, then the text."""
    if not images:
        return {"role": "user", "content": text}
    parts = [image_part(i) for i in images]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


class Stream:
    """The chunks of a streamed response, one dict per SSE event, until
    "data: [DONE]". After iteration, `usage` holds the usage chunk's object
    (when stream_options.include_usage was asked) and `finish_reason` the
    first choice's. An error event raises StreamError. Use as a context
    manager, or call close(), to drop the connection early."""

    def __init__(self, response, timeout):
        self._response = response
        self._timeout = timeout
        self._events = sse.iter_events(response)
        self.usage = None
        self.finish_reason = None
        self.done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        try:
            data = next(self._events)
        except StopIteration:
            self.close()
            raise APIConnectionError("the stream ended without data: [DONE]") from None
        except socket.timeout as e:
            self.close()
            raise APITimeoutError("no stream event within %s s" % self._timeout) from e
        except OSError as e:
            self.close()
            raise APIConnectionError("stream broken: %s" % e) from e
        if data == "[DONE]":
            self.close()
            raise StopIteration
        try:
            chunk = json.loads(data)
        except ValueError as e:
            self.close()
            raise APIConnectionError("unparsable stream chunk: %.200r" % data) from e
        if isinstance(chunk, dict) and "error" in chunk:
            self.close()
            raise StreamError(200, chunk["error"])
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if choices and choices[0].get("finish_reason"):
            self.finish_reason = choices[0]["finish_reason"]
        return chunk

    def text(self):
        """Yields the text of each chunk (delta.content for chat, text for
        completions), skipping empty ones."""
        for chunk in self:
            for c in chunk.get("choices") or []:
                t = c.get("text")
                if t is None:
                    t = (c.get("delta") or {}).get("content")
                if t:
                    yield t

    def close(self):
        self.done = True
        try:
            self._response.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client:
    """An OpenAI-compatible API client for mmmambad (works with any such server).

    base_url: the server root ("http://host:port", with or without /v1)
    api_key: sent as "Authorization: Bearer KEY"
    model: the default model for requests (else the first of GET /v1/models)
    timeout: seconds to wait to connect, for a whole response, or for each
             stream event (a long prefill can be silent: raise it for long prompts)
    """

    def __init__(self, base_url=None, api_key=None, model=None, timeout=600.0):
        base = (base_url or os.environ.get("MMMAMBA_BASE_URL")
                or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self.api_key = (api_key or os.environ.get("MMMAMBA_API_KEY")
                        or os.environ.get("OPENAI_API_KEY"))
        self.model = model
        self.timeout = timeout

    # ---- transport ----
    def _request(self, method, path, body=None, stream=False):
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers,
                                     method=method)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            with e:
                raw = e.read()
            try:
                obj = json.loads(raw)
                err = obj.get("error", obj) if isinstance(obj, dict) else {"message": str(obj)}
            except ValueError:
                err = {"message": raw.decode("utf-8", "replace")[:500] or e.reason}
            raise error_for_status(e.code, err, dict(e.headers.items())) from None
        except socket.timeout as e:
            raise APITimeoutError("no answer from %s within %s s" % (self.base_url, self.timeout)) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, socket.timeout):
                raise APITimeoutError("no answer from %s within %s s"
                                      % (self.base_url, self.timeout)) from e
            raise APIConnectionError("cannot reach %s: %s" % (self.base_url, e.reason)) from e
        except OSError as e:
            raise APIConnectionError("cannot reach %s: %s" % (self.base_url, e)) from e

    def _json(self, method, path, body=None):
        resp = self._request(method, path, body)
        try:
            with resp:
                return json.loads(resp.read())
        except socket.timeout as e:
            raise APITimeoutError("no answer within %s s" % self.timeout) from e
        except ValueError as e:
            raise APIConnectionError("the server's answer is not JSON") from e

    def _model(self, model):
        if model:
            return model
        if not self.model:
            data = self.models()
            if not data:
                raise APIConnectionError("the server lists no models")
            self.model = data[0]["id"]
        return self.model

    # ---- API ----
    def health(self):
        """True when GET /health answers 200 (serving), False on 503 (loading or draining)."""
        try:
            with self._request("GET", "/health") as r:
                return r.status == 200
        except APIError as e:
            if e.status == 503:
                return False
            raise

    def models(self):
        """The model objects of GET /v1/models (a list of dicts with "id")."""
        return self._json("GET", "/v1/models").get("data", [])

    def chat(self, messages, model=None, stream=False, **params):
        """POST /v1/chat/completions. messages: OpenAI message dicts (see
        user_message and image_part). params: any request fields (max_tokens,
        temperature, stop, seed, ...). Returns the chat.completion dict, or a
        Stream of chat.completion.chunk dicts when stream=True."""
        body = dict(params, model=self._model(model), messages=list(messages))
        return self._post("/v1/chat/completions", body, stream)

    def completions(self, prompt, model=None, stream=False, **params):
        """POST /v1/completions. prompt: a string or a list of token ids.
        Returns the text_completion dict, or a Stream of chunks."""
        body = dict(params, model=self._model(model), prompt=prompt)
        return self._post("/v1/completions", body, stream)

    def _post(self, path, body, stream):
        if not stream:
            body.pop("stream", None)
            return self._json("POST", path, body)
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
        return Stream(self._request("POST", path, body, stream=True), self.timeout)

