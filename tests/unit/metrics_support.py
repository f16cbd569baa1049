"""Helpers for the metrics tests: scrape the real dashboard app, parse, and a writer process.

`python -m tests.unit.metrics_support HOME` is a metrics writer (what a gateway or the
dispatcher is, minus the rest): it applies the commands it reads on stdin, one a line,
`inc N`, `observe SECONDS`, `live N`, answering `ok` after each, and exits on `exit`
or end of input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.home import HermesHome

REPO = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-for-the-tests-0123"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """({(sample name, labels): value}, {family name: type}) of an exposition body."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@contextmanager
def dashboard(
    home: HermesHome,
    env: Mapping[str, str] | None = None,
    base_url: str = "http://127.0.0.1:9119",
    **settings: Any,
) -> Iterator[TestClient]:
    """The real dashboard app (loopback mode unless told otherwise) with a metrics token."""
    environ = {"HERMES_METRICS_TOKEN": TOKEN} if env is None else dict(env)
    saved = {k: os.environ.get(k) for k in ("HERMES_METRICS_TOKEN", "HERMES_METRICS_TOKEN_FILE")}
    try:
        for key in saved:
            os.environ.pop(key, None)
        os.environ.update(environ)
        app = create_app(DashboardSettings(**settings), home=home, manager=None)
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
    with TestClient(app, base_url=base_url, follow_redirects=False) as client:
        yield client


def scrape(client: TestClient, token: str = TOKEN) -> tuple[Samples, dict[str, str], str]:
    response = client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples, types = parse(response.text)
    return samples, types, response.text


class WriterProc:
    """A metrics-writing process driven line by line."""

    def __init__(self, home: Path, env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.metrics_support", str(home)],
            cwd=REPO,
            env={**os.environ, "HERMES_HOME": str(home), **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask("hello") == "ok"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def exit(self) -> None:
        self.ask("exit")
        self.proc.wait(10)


def _writer_main(home: Path) -> int:
    from hermes_container.metrics.writer import writer

    active = writer(home)
    if active is None:
        print("no writer", flush=True)
        return 1
    counter = active.counter("hermes_test_events", "test events", ("kind",)).labels("a")
    histogram = active.histogram("hermes_test_seconds", "test durations", (), (0.1, 1.0))
    live = active.live_gauge("hermes_test_live", "test live value", ())
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "exit":
            print("ok", flush=True)
            return 0
        if word == "inc":
            counter.inc(float(arg))
        elif word == "observe":
            histogram.observe(float(arg))
        elif word == "live":
            live.set(float(arg))
        print("ok", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_writer_main(Path(sys.argv[1])))
