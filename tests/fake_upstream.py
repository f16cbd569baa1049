"""A real OpenAI-compatible fake model provider on 127.0.0.1, for tests and benchmarks.

    with FakeUpstream() as upstream:          # or the `fake_upstream` pytest fixture
        upstream.base_url                     # "http://127.0.0.1:<port>/v1"
        upstream.set(reply="hi", status=200)  # replace the behaviour (fields of Behaviour)
        upstream.set(chunks=["a", "b"], chunk_delay=0.2)   # streamed pieces, paced
        upstream.set(delay=30)                # hang before answering (timeouts); stop() ends it
        upstream.set(status=500, error="boom")
        upstream.set(fail_first=2, status=500)  # chat requests 1-2 get the 500, later ones 200
        upstream.set(status=429, headers={"retry-after": "7"})
        upstream.set(body_bytes=4096)         # a JSON reply of exactly 4096 bytes
        upstream.body_sent                    # bytes of each sized body written before the end
        upstream.requests[-1].body            # every request received: method, path, headers, body
        upstream.wait_for_requests(1)

Streaming follows the request's `"stream": true`, with chunked transfer encoding so
connections stay alive. By default the reply echoes the last user message.
Run standalone (for bench/): `python -m tests.fake_upstream [--port N]`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    reply: str | None = None  # None: "echo: <last user message>"
    chunks: list[str] | None = None  # streamed pieces; None: the reply split into words
    chunk_delay: float = 0.0  # seconds between streamed chunks
    delay: float = 0.0  # seconds before the response starts
    status: int = 200
    error: str = "fake upstream error"  # message of a non-2xx (status >= 300) reply
    # > 0: only the first this many chat requests (counted from `set`) answer with
    # `status` and `error`; later ones succeed as if status were 200. 0: every one does.
    fail_first: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # extra headers of that reply
    body_bytes: int | None = None  # non-streaming: a JSON reply of exactly this size (>= 10)
    body_chunked: bool = False  # send body_bytes chunked, without a Content-Length
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    )


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None


def _last_user_text(body: Any) -> str:
    try:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        return str(users[-1]["content"])
    except (TypeError, KeyError, IndexError, AttributeError):
        return ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real provider
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _record(self, body: Any) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.owner._record(Received(self.command, self.path, headers, body))

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "fake-model"}]})
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._record(body)
        owner = self.server.owner
        b = owner.behaviour
        if b.delay and owner.stopping.wait(b.delay):
            self.close_connection = True
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})
        elif b.status >= 300 and owner._fails_now(b):
            error = {"error": {"message": b.error, "type": "fake_error"}}
            self._send_json(b.status, error, b.headers)
        elif isinstance(body, dict) and body.get("stream") is True:
            self._stream(body, b)
        elif b.body_bytes is not None:
            self._sized(b.body_bytes, b.body_chunked)
        else:
            self._send_json(200, _completion(body, b))

    def _stream(self, body: Any, b: Behaviour) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        reply = b.reply if b.reply is not None else f"echo: {_last_user_text(body)}"
        pieces = b.chunks if b.chunks is not None else [w + " " for w in reply.split(" ")]
        model = body.get("model", "fake-model")
        for i, piece in enumerate(pieces):
            if i and b.chunk_delay and self.server.owner.stopping.wait(b.chunk_delay):
                return
            self._chunk(_sse(_delta(model, {"content": piece}, None)))
        final = _delta(model, {}, "stop")
        if b.usage is not None:
            final["usage"] = b.usage
        self._chunk(_sse(final) + b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _sized(self, size: int, chunked: bool) -> None:
        """`{"pad":"xxx..."}` of exactly `size` bytes, written in pieces as the client
        reads them; how much got out is recorded, also when the client hangs up."""
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(size))
        self.end_headers()
        sent = 0
        try:
            for piece in _padded_json(size):
                if chunked:
                    self._chunk(piece)
                else:
                    self.wfile.write(piece)
                sent += len(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up: nothing more to send
            self.close_connection = True
        finally:
            self.server.owner._sent(sent)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _padded_json(size: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    if size < 10:
        raise ValueError("body_bytes must be at least 10")
    yield b'{"pad":"'
    pad = size - 10
    while pad > 0:
        yield b"x" * min(piece, pad)
        pad -= piece
    yield b'"}'


def _delta(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(body: Any, b: Behaviour) -> dict[str, Any]:
    reply = b.reply if b.reply is not None else f"echo: {_last_user_text(body)}"
    result: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake-model") if isinstance(body, dict) else "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
        ],
    }
    if b.usage is not None:
        result["usage"] = b.usage
    return result


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeUpstream


class FakeUpstream:
    def __init__(self, port: int = 0) -> None:
        self.behaviour = Behaviour()
        self.requests: list[Received] = []
        self.body_sent: list[int] = []
        self.stopping = threading.Event()
        self._cond = threading.Condition()
        self._chats = 0  # chat requests answered under the current behaviour
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set(self, **fields: Any) -> Behaviour:
        """Replace the behaviour: unnamed fields go back to their defaults."""
        behaviour = Behaviour(**fields)
        with self._cond:
            self.behaviour, self._chats = behaviour, 0
        return behaviour

    def _fails_now(self, b: Behaviour) -> bool:
        """Whether this chat request gets the error (`fail_first` counts them)."""
        with self._cond:
            if b is not self.behaviour:  # replaced while this request waited: not counted
                return b.fail_first == 0
            self._chats += 1
            return b.fail_first == 0 or self._chats <= b.fail_first

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # ends every delay/hang at once
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, received: Received) -> None:
        with self._cond:
            self.requests.append(received)
            self._cond.notify_all()

    def _sent(self, size: int) -> None:
        with self._cond:
            self.body_sent.append(size)
            self._cond.notify_all()

    def wait_for_body_sent(self, count: int = 1, timeout: float = 10.0) -> list[int]:
        """`body_sent` once `count` sized bodies have ended (sent whole or cut off)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.body_sent) >= count, timeout):
                raise TimeoutError(f"{len(self.body_sent)} of {count} bodies after {timeout}s")
            return list(self.body_sent)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} of {count} requests after {timeout}s")
            return list(self.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible upstream")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    upstream = FakeUpstream(args.port).start()
    print(upstream.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        upstream.stop()


if __name__ == "__main__":
    main()
