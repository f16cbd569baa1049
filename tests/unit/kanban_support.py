"""Shared by the kanban dispatcher, runner, daemon and CLI tests: a running site (real
gateways for alpha and beta, gamma's down, and the fake provider), a fresh board per
test, a fake board clock, and the fixtures built from them.

A test module that wants the fixtures imports them by name (pytest finds fixtures in
a module's namespace); `site` is module-scoped, so each module gets its own gateways.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.home import HermesHome
from hermes_container.kanban.dispatcher import (
    Dispatcher,
    TickReport,
)
from hermes_container.kanban.model import Event, Holder, Run, Task
from hermes_container.kanban.store import Store, open_store
from hermes_container.profiles import create_profile, ensure_default_profile
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile

# A dispatcher on another host: its pid means nothing here, only its claim's expiry.
ELSEWHERE = Holder("elsewhere#0badc0de", 4242)


class Clock:
    """The board's time, moved by the test (starts at the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def open_test_store(home: HermesHome, clock: Callable[[], float] | None = None) -> Store:
    """The home's SQLite board (whatever HERMES_KANBAN_DATABASE_URL says outside)."""
    return open_store(home, {}, clock=clock)


def set_kanban(home: HermesHome, **section: Any) -> None:
    """Write the `kanban:` section of the default profile's config.yaml (the real file
    the dispatcher re-reads every tick), keeping the rest of it."""
    path = home.root / "config.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    data["kanban"] = section
    path.write_text(yaml.safe_dump(data))


def events_of(store: Store, task_id: int) -> list[Event]:
    return store.events_since(0, task_id=task_id, limit=10_000)


def last_event(store: Store, task_id: int, kind: str) -> Event:
    return [e for e in events_of(store, task_id) if e.kind == kind][-1]


def kinds(store: Store, task_id: int) -> list[str]:
    return [e.kind for e in events_of(store, task_id)]


def snapshot(store: Store) -> tuple[list[Task], list[Event], list[list[Run]]]:
    """Everything a tick could write: tasks, events, runs."""
    tasks = store.list_tasks(board=None)
    return tasks, store.events_since(0, limit=100_000), [store.runs_of(t.id) for t in tasks]


def tick_and_wait(dispatcher: Dispatcher, **kwargs: Any) -> TickReport:
    """One tick, then the outcomes of what it started, as `hermes kanban dispatch` does."""
    report = dispatcher.tick(**kwargs)
    for outcome in dispatcher.wait_all(timeout=60):
        report.add_outcome(outcome)
    assert not dispatcher.inflight
    return report


def ids(tasks: list[Task]) -> list[int]:
    return [t.id for t in tasks]


class CountSampler:
    """Samples running tasks per assignee from a store of its own while a test runs:
    a cap must hold at every moment, not only when the tick reports."""

    def __init__(self, home: HermesHome) -> None:
        self.store = open_test_store(home)
        self.max_per: dict[str, int] = {}
        self.max_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = self.store.running_counts()
            for name, n in counts.items():
                self.max_per[name] = max(self.max_per.get(name, 0), n)
            self.max_total = max(self.max_total, sum(counts.values()))
            self.samples += 1
            self._stop.wait(0.005)

    def __enter__(self) -> CountSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.store.close()


@dataclass
class Site:
    """A home whose gateways outlive one test: alpha and beta run, gamma is a profile
    whose gateway is not running. Starting a gateway costs about a second, and most
    tests need only "a running gateway for alpha"; each test still gets a board of
    its own (the `home` fixture removes the board database before it)."""

    home: HermesHome
    upstream: FakeUpstream
    profiles: dict[str, GatewayProfile]


@contextlib.contextmanager
def running_site(root: Path) -> Iterator[Site]:
    home = HermesHome(root / "home")
    env = {"HERMES_HOME": str(home.root)}
    ensure_default_profile(home)
    with FakeUpstream() as upstream:
        profiles = {}
        try:
            for name in ("alpha", "beta", "gamma"):
                create_profile(home, name)
                profiles[name] = GatewayProfile(home, name, upstream, root)
            for name in ("alpha", "beta"):
                profiles[name].start(env=env)
            yield Site(home, upstream, profiles)
        finally:
            for profile in profiles.values():
                profile.cleanup()


def fresh_board(site: Site, monkeypatch: pytest.MonkeyPatch) -> HermesHome:
    """The site's home for one test: an empty board, no kanban settings, a provider
    back to its default behaviour, and HERMES_HOME pointing there for subprocesses."""
    monkeypatch.setenv("HERMES_HOME", str(site.home.root))
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    monkeypatch.delenv("HERMES_PROFILE", raising=False)
    shutil.rmtree(site.home.root / "kanban", ignore_errors=True)
    set_kanban(site.home)
    site.upstream.set()
    site.upstream.requests.clear()
    for profile in site.profiles.values():
        for proc in profile.procs:
            assert proc.popen.poll() is None, f"{profile.name}'s gateway died: {proc.stderr()}"
    return site.home


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("site")) as running:
        yield running


@pytest.fixture
def home(site: Site, monkeypatch: pytest.MonkeyPatch) -> HermesHome:
    return fresh_board(site, monkeypatch)


@pytest.fixture
def upstream(site: Site, home: HermesHome) -> FakeUpstream:
    return site.upstream


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(home: HermesHome, clock: Clock) -> Iterator[Store]:
    opened = open_test_store(home, clock)
    yield opened
    opened.close()


@pytest.fixture
def dispatcher(home: HermesHome, store: Store) -> Iterator[Dispatcher]:
    made = Dispatcher(home, store)
    yield made
    made.wait_all(timeout=30)
