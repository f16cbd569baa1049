"""Shared by the jobs unit tests: a board store on either backend with a clock the test
moves, jobs built from the options the CLI takes, and a dispatcher's steps on a job's
task (promote, claim, complete, fail, 429) through the store API, so retries, backoff
and the dead-letter queue are the board's own failure accounting, as in production.

A test module that wants the fixtures imports them by name (pytest finds fixtures in a
module's namespace), as the kanban tests do with kanban_support.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hermes_container.home import HermesHome
from hermes_container.kanban.jobs import spec as specs
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.jobs.fire import Limits
from hermes_container.kanban.jobs.follow import Finished
from hermes_container.kanban.jobs.model import Job, JobEvent, JobRun
from hermes_container.kanban.model import Holder, Run, Task
from hermes_container.kanban.store import DATABASE_URL_ENV, Store, open_store

HOLDER = Holder(host="jobs-test", pid=4242)

# A Thursday, 2027-01-07T00:00:00Z: far from any daylight-saving change, on a whole hour.
EPOCH = 1_799_280_000.0


class Clock:
    """The board's time, moved by the test; several stores (threads) may share it."""

    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    @property
    def now(self) -> float:
        return self()

    def set(self, moment: float) -> None:
        with self._lock:
            self._now = moment

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class Board:
    """One board database, its jobs, and the clock its stores read."""

    home: HermesHome
    backend: str
    env: dict[str, str]  # what a CLI subprocess needs to open this same board
    clock: Clock
    store: Store
    jobs: Jobs
    opened: list[Store] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)

    def open(self, clock: Callable[[], float] | None = None) -> Store:
        """Another store on the same database (another dispatcher)."""
        store = open_store(self.home, self.env, clock=clock or self.clock)
        self.opened.append(store)
        return store

    # -- the scheduler's steps, as Scheduler.tick takes them (deliveries aside) -------

    def fire(self, max_concurrent: int | None = None) -> list[JobRun]:
        return self.jobs.fire_due(Limits(max_concurrent))

    def follow(self) -> int:
        return self.jobs.follow(self.finished.append)

    def tick(self, max_concurrent: int | None = None) -> list[JobRun]:
        self.follow()
        made = self.fire(max_concurrent)
        self.jobs.start_queued(Limits(max_concurrent))
        return made

    # -- reading ---------------------------------------------------------------------

    def events(self, job: str | None = None) -> list[JobEvent]:
        return self.jobs.events(0, job=job, limit=10_000)

    def kinds(self, job: str | None = None) -> list[str]:
        return [e.kind for e in self.events(job)]

    def runs(self, name: str) -> list[JobRun]:
        """A job's runs, oldest first."""
        return [run for run, _tasks in reversed(self.jobs.runs(name, limit=10_000))]

    def tasks(self, run: JobRun | int) -> list[Task]:
        run_id = run if isinstance(run, int) else run.id
        return self.jobs.run_tasks([run_id])[run_id]

    def task(self, run: JobRun | int, step: int = 1) -> Task:
        return self.tasks(run)[step - 1]

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.store.transact(lambda tx: tx.all(query, params), write=False)

    # -- a dispatcher's steps on one task --------------------------------------------

    def claim(self, task_id: int) -> Run:
        """Make the task ready if it is due (promote), then claim it."""
        task = self.store.get_task(task_id)
        self.store.promote(task.board)
        run = self.store.claim(HOLDER, board=task.board, task_id=task_id)
        assert run is not None, f"task {task_id} not claimable: {self.store.get_task(task_id)}"
        return run

    def complete(self, task_id: int, result: str = "done") -> Task:
        return self.store.complete(self.claim(task_id), result, latency_ms=12)

    def fail(self, task_id: int, error: str = "the provider said 500") -> Task:
        """One counted failure, with the job's retry policy (as the dispatcher passes it)."""
        run = self.claim(task_id)
        task = self.store.get_task(task_id)
        policy = self.jobs.policies([task]).get(task_id)
        assert policy is not None, f"task {task_id} is not a job's task"
        return self.store.fail(run, error, policy)


def add_job(
    jobs: Jobs,
    name: str,
    *,
    profile: str = "alpha",
    prompt: str = "summarise the night's logs",
    steps: list[tuple[str, str]] | None = None,
    **options: Any,
) -> Job:
    """A job from CLI-style options (`every="60s"`, `overlap="queue"`, ...)."""
    if not any(k in options for k in ("cron", "every", "at")):
        options["every"] = "60s"
    chosen = tuple(specs.Step(p, t) for p, t in (steps or [(profile, prompt)]))
    job, _secret = jobs.add(specs.build(name=name, steps=chosen, **options))
    return job


def fresh_postgres_schema(url: str) -> None:
    """An empty database: cheaper than creating one, and just as empty."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def board_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend != "postgresql":
        return {DATABASE_URL_ENV: ""}
    server = request.getfixturevalue("postgres_server")
    fresh_postgres_schema(server.url())
    return {DATABASE_URL_ENV: server.url()}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board(
    backend: str,
    request: pytest.FixtureRequest,
    hermes_home: HermesHome,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Board]:
    """A fresh board on `backend`; HERMES_KANBAN_DATABASE_URL names it for subprocesses."""
    env = board_env(backend, request)
    if env[DATABASE_URL_ENV]:
        monkeypatch.setenv(DATABASE_URL_ENV, env[DATABASE_URL_ENV])
    else:
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    store = open_store(hermes_home, env, clock=clock)
    made = Board(hermes_home, backend, env, clock, store, Jobs(store), [store])
    yield made
    for opened in made.opened:
        opened.close()
