"""A real webhook receiver on 127.0.0.1, for the jobs' delivery tests.

    with WebhookReceiver() as receiver:   # or receiver = WebhookReceiver().start()
        receiver.url                      # "http://127.0.0.1:<port>/hook"
        receiver.set(fail_first=2)        # the next 2 POSTs get a 500, later ones a 204
        receiver.set(fail_first=-1)       # every POST gets a 500
        receiver.wait_for_posts(3)        # every POST received, answered or not
        receiver.posts[-1].body           # raw bytes, exactly as sent (signatures cover them)
        receiver.posts[-1].status         # what this receiver answered

Each POST is recorded with its path, lower-cased headers, raw body and the status it
was answered with; the failing ones too, since a sender's retries are what is tested.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = self.server.owner._answer(self.path, headers, body)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: WebhookReceiver


class WebhookReceiver:
    def __init__(self, path: str = "/hook") -> None:
        self.path = path
        self.posts: list[Post] = []
        self.fail_first = 0
        self.fail_status = 500
        self._answered = 0  # POSTs answered since the last `set`
        self._cond = threading.Condition()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def set(self, *, fail_first: int = 0, status: int = 500) -> None:
        """The next `fail_first` POSTs get `status`, later ones 204; -1: every one does."""
        with self._cond:
            self.fail_first, self.fail_status, self._answered = fail_first, status, 0

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._cond:
            self._answered += 1
            failing = self.fail_first < 0 or self._answered <= self.fail_first
            status = self.fail_status if failing else 204
            self.posts.append(Post(path, headers, body, status))
            self._cond.notify_all()
            return status

    def wait_for_posts(self, count: int, timeout: float = 10.0) -> list[Post]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.posts) >= count, timeout):
                raise TimeoutError(f"{len(self.posts)} of {count} POSTs after {timeout}s")
            return list(self.posts)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
