"""`hermes jobs ...` as a user runs it: bad input exits 2 with one line on stderr and
writes nothing, `--json` everywhere with stable shapes, and a job's delivery secret is
printed once, at `jobs add`, never again.

A handful of commands run the real CLI in a subprocess (run_hermes); the many
validation cases call the same entry point in-process (cli.main), which is what the
subprocess runs, at a fraction of the cost.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hermes_container.errors import UsageError
from hermes_container.home import HermesHome
from hermes_container.kanban.jobs import spec as specs
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.jobs.schedule import CRON, EVERY, Schedule
from hermes_container.kanban.model import Holder
from hermes_container.kanban.store import DATABASE_URL_ENV, Store, open_store, sqlite_path
from hermes_container.kanban.tx import Tx
from hermes_container.profiles import create_profile, ensure_default_profile
from tests.conftest import run_hermes

HOLDER = Holder("cli-test", 77)

TABLES = ("kanban_jobs", "kanban_job_runs", "kanban_job_events", "kanban_tasks", "kanban_events")

JOB_KEYS = {
    "board", "catchup", "created_at", "deliver", "last_slot", "max_retries", "name",
    "next_slot", "overlap", "paused", "retry_delay", "retry_max_delay", "schedule",
    "schedule_text", "steps", "timeout",
}  # fmt: skip
RUN_KEYS = {
    "id", "job", "board", "slot", "slot_name", "state", "manual", "created_at",
    "finished_at", "first_task", "last_task", "error", "delivery", "delivery_attempts",
    "delivery_next_at", "delivery_error",
}  # fmt: skip
RUN_ROW_KEYS = RUN_KEYS | {"tasks", "attempts", "latency_seconds"}
DEAD_KEYS = RUN_ROW_KEYS | {"reason", "failed_task", "profile", "error", "prompt", "failures"}


@pytest.fixture
def home(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> HermesHome:
    """A home with profiles alpha and beta, and no board yet (SQLite)."""
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    ensure_default_profile(hermes_home)
    for name in ("alpha", "beta"):
        create_profile(hermes_home, name)
    return hermes_home


@pytest.fixture
def store(home: HermesHome) -> Iterator[Store]:
    opened = open_store(home, {})
    yield opened
    opened.close()


def hermes(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI's entry point in this process: (exit code, stdout, stderr)."""
    from hermes_container.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def ok_json(*args: str) -> Any:
    result = run_hermes(*args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    def read(tx: Tx) -> dict[str, list[tuple[Any, ...]]]:
        return {table: tx.all(f"SELECT * FROM {table} ORDER BY 1") for table in TABLES}

    return store.transact(read, write=False)


def past() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat()


def future(hours: float = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def write_yaml(home: HermesHome, name: str, text: str) -> str:
    path = home.root / name
    path.write_text(text)
    return str(path)


ADD = ("jobs", "add", "nightly")
ALPHA = ("--profile", "alpha", "--prompt", "check the backups")


def bad_adds(home: HermesHome) -> list[tuple[str, ...]]:
    """Every kind of bad `jobs add` input (exit 2, one line, nothing written)."""
    unknown_key = write_yaml(
        home, "bad-keys.yaml", "name: x\nprofile: alpha\nprompt: p\nevery: 1m\nretries: 3\n"
    )
    both = write_yaml(
        home, "both.yaml",
        "name: x\nprofile: alpha\nprompt: p\nevery: 1m\nsteps:\n  - {profile: beta, prompt: q}\n",
    )  # fmt: skip
    return [
        (*ADD, *ALPHA, "--cron", "61 * * * *"),
        (*ADD, *ALPHA, "--cron", "* * *"),
        (*ADD, *ALPHA, "--cron", "0 0 30 2 *"),  # never matches
        (*ADD, "--profile", "nobody", "--prompt", "x", "--every", "5m"),
        (*ADD, "--step", "alpha:one", "--step", "ghost:two", "--every", "5m"),
        (*ADD, "--profile", "Bad Name", "--prompt", "x", "--every", "5m"),
        (*ADD, *ALPHA, "--every", "0s"),
        (*ADD, *ALPHA, "--every", "400d"),
        (*ADD, *ALPHA, "--every", "soon"),
        (*ADD, *ALPHA, "--every", "5m", "--retry-delay", "8d"),
        (*ADD, *ALPHA, "--every", "5m", "--retry-delay", "0.5s"),
        (*ADD, *ALPHA, "--every", "5m", "--retry-delay", "5m", "--retry-max-delay", "1m"),
        (*ADD, *ALPHA, "--every", "5m", "--timeout", "2d"),
        (*ADD, *ALPHA, "--every", "5m", "--max-retries", "101"),
        (*ADD, *ALPHA, "--every", "5m", "--max-retries", "-1"),
        (*ADD, *ALPHA, "--every", "5m", "--max-retries", "two"),
        (*ADD, *ALPHA, "--every", "5m", "--overlap", "sometimes"),
        (*ADD, *ALPHA, "--every", "5m", "--catchup", "some"),
        (*ADD, *ALPHA, "--every", "5m", "--deliver", "ftp://example.org/x"),
        (*ADD, *ALPHA, "--cron", "0 9 * * *", "--timezone", "Mars/Olympus"),
        (*ADD, *ALPHA, "--at", "tomorrow-ish"),
        (*ADD, *ALPHA),  # no schedule
        (*ADD, *ALPHA, "--every", "5m", "--cron", "* * * * *"),  # two
        (*ADD, "--profile", "alpha", "--every", "5m"),  # no prompt
        (*ADD, "--profile", "alpha", "--prompt", "   ", "--every", "5m"),
        (*ADD, *ALPHA, "--step", "beta:two", "--every", "5m"),  # --step and --profile
        (*ADD, "--step", "no-colon", "--every", "5m"),
        ("jobs", "add", "Bad Name", *ALPHA, "--every", "5m"),
        ("jobs", "add", *ALPHA, "--every", "5m"),  # no name
        ("jobs", "add", "--file", unknown_key),
        ("jobs", "add", "--file", both),
        ("jobs", "add", "--file", str(home.root / "missing.yaml")),
    ]


# -- bad input -------------------------------------------------------------------------


def test_bad_input_in_a_subprocess_exits_2_with_one_line_and_creates_no_board(
    home: HermesHome,
) -> None:
    unknown_key = write_yaml(
        home, "job.yaml", "name: x\nprofile: alpha\nprompt: p\nevery: 1m\ncolour: blue\n"
    )
    cases = [
        (*ADD, *ALPHA, "--cron", "61 * * * *"),
        (*ADD, "--profile", "nobody", "--prompt", "x", "--every", "5m"),
        (*ADD, *ALPHA, "--every", "5m", "--retry-delay", "8d"),
        (*ADD, *ALPHA, "--cron", "0 9 * * *", "--timezone", "Mars/Olympus"),
        (*ADD, *ALPHA, "--step", "beta:two", "--every", "5m"),
        ("jobs", "add", "--file", unknown_key),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: run_hermes(*args), cases))
    for args, result in zip(cases, results, strict=True):
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("hermes: error: "), (args, lines)
        assert result.stdout == "", args
    said = [r.stderr for r in results]
    assert "bad cron expression '61 * * * *'" in said[0]
    assert "unknown profile(s): nobody" in said[1]
    assert "--retry-delay must be between 1s and 7d" in said[2]
    assert "unknown time zone 'Mars/Olympus'" in said[3]
    assert "not both" in said[4]
    assert "unknown key(s) colour" in said[5]
    assert not (home.root / "kanban").exists()


def test_at_in_the_past_exits_2_and_adds_nothing(home: HermesHome, store: Store) -> None:
    before = snapshot(store)
    result = run_hermes(*ADD, *ALPHA, "--at", past())
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "hermes: error: --at is in the past: a one-time job must fire later than now"
    ]
    assert snapshot(store) == before


def test_at_in_the_past_on_a_fresh_home_creates_no_board(home: HermesHome) -> None:
    result = run_hermes(*ADD, *ALPHA, "--at", past())
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not sqlite_path(home).exists()


def test_every_bad_add_exits_2_with_one_line_and_changes_nothing(
    home: HermesHome, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = hermes(capsys, *ADD, *ALPHA, "--every", "5m", "--json")
    assert code == 0, err
    before = snapshot(store)
    assert len(before["kanban_jobs"]) == 1
    files = sorted(p.name for p in sqlite_path(home).parent.iterdir())
    for args in bad_adds(home):
        code, out, err = hermes(capsys, *args)
        assert code == 2, (args, code, err)
        assert len(err.splitlines()) == 1 and err.startswith("hermes: error: "), (args, err)
        assert out == "", (args, out)
    # A file that is not a job mapping at all, or not YAML.
    for text in ("- profile: alpha\n", "name: [unclosed\n"):
        code, out, err = hermes(capsys, "jobs", "add", "--file", write_yaml(home, "f.yaml", text))
        assert code == 2, (text, code, err)
        assert len(err.splitlines()) == 1 and err.startswith("hermes: error: "), (text, err)
        assert out == ""
    # The name exists already: the store says so, still one line, still exit 2.
    code, out, err = hermes(capsys, *ADD, *ALPHA, "--every", "1h")
    assert (code, err) == (2, "hermes: error: job 'nightly' already exists\n")
    assert snapshot(store) == before
    assert sorted(p.name for p in sqlite_path(home).parent.iterdir()) == files


def test_commands_on_what_does_not_exist_exit_2_with_one_line(
    home: HermesHome, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(store)
    for args in (
        ("jobs", "show", "nosuch"),
        ("jobs", "pause", "nosuch"),
        ("jobs", "resume", "nosuch"),
        ("jobs", "rm", "nosuch"),
        ("jobs", "run", "nosuch"),
        ("jobs", "runs", "nosuch"),
        ("jobs", "runs", "nightly", "--limit", "0"),
        ("jobs", "retry", "12345"),
        ("jobs", "retry", "abc"),
        ("jobs", "show", "Bad Name"),
        ("jobs", "events", "--job", "Bad Name"),
    ):
        code, out, err = hermes(capsys, *args, "--json")
        assert code == 2, (args, code, err)
        assert len(err.splitlines()) == 1, (args, err)
        assert out == "", args
    assert snapshot(store) == before


def test_specs_are_checked_in_full_before_anything_is_stored() -> None:
    step = (specs.Step("alpha", "x"),)

    def refused(match: str, **options: Any) -> None:
        with pytest.raises(UsageError, match=match):
            specs.build(name=options.pop("name", "j"), steps=options.pop("steps", step), **options)

    refused("bad cron expression", cron="*/0 * * * *")
    refused("unknown time zone", cron="0 9 * * *", timezone="Europe/Atlantis")
    refused("an interval must be between", every="0.5s")
    refused("an interval must be between", every=366 * 86400 + 1)
    refused("--timeout must be between 1s and 1d", every="1m", timeout="25h")
    refused("--retry-max-delay must be between 1s and 7d", every="1m", retry_max_delay="8d")
    refused("expected a whole number", every="1m", max_retries=True)
    refused("invalid job name", name="-dash", every="1m")
    refused("a job has 1 to 20 steps", every="1m", steps=tuple(step * 21))
    refused("at most 32000 characters", every="1m", steps=(specs.Step("alpha", "p" * 32_001),))
    refused("http or https URL", every="1m", deliver="http:///nohost")
    with pytest.raises(UsageError, match="unknown key"):
        specs.from_mapping({"name": "j", "profile": "alpha", "prompt": "p", "when": 1}, "f.yaml")
    with pytest.raises(UsageError, match="steps must be a list"):
        specs.from_mapping({"name": "j", "steps": "alpha: p", "every": "1m"}, "f.yaml")
    with pytest.raises(UsageError, match="expected a duration"):
        specs.from_mapping(
            {"name": "j", "profile": "alpha", "prompt": "p", "every": True}, "f.yaml"
        )
    with pytest.raises(UsageError, match="unknown schedule kind"):
        Schedule("hourly").check()
    # The good ones, as YAML gives them: numbers are seconds.
    good = specs.from_mapping(
        {
            "name": "j",
            "steps": [{"profile": "alpha", "prompt": "a"}, {"profile": "beta", "prompt": "b"}],
            "every": 90,
            "retry_delay": 5,
            "max_retries": 0,
            "timezone": "Europe/Berlin",
        },
        "f.yaml",
    )
    assert good.schedule == Schedule(EVERY, every=90.0, timezone="Europe/Berlin")
    assert (good.retry_delay, good.retry_max_delay, good.max_retries) == (5.0, 600.0, 0)
    assert good.profiles == ["alpha", "beta"]
    assert specs.build(name="j", steps=step, cron=" */5  *   * * * ").schedule == Schedule(
        CRON, cron="*/5 * * * *"
    )
    # A retry delay longer than the default cap raises the cap with it.
    assert specs.build(name="j", steps=step, every="1m", retry_delay="1h").retry_max_delay == 3600


# -- --json shapes and the secret ---------------------------------------------------------


def test_the_delivery_secret_is_printed_once_at_add_and_never_again(
    home: HermesHome, store: Store
) -> None:
    added = ok_json(*ADD, *ALPHA, "--every", "5m", "--deliver", "http://127.0.0.1:9/hook")
    secret = added["secret"]
    assert isinstance(secret, str) and len(secret) >= 40
    assert set(added) == JOB_KEYS | {"secret"}
    plain = run_hermes(
        "jobs", "add", "weekly", *ALPHA, "--cron", "0 6 * * 1", "--deliver", "https://h.example/x"
    )
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("job weekly: cron 0 6 * * 1, next slot ")
    assert lines[1].startswith("delivery secret (shown once")
    second = lines[1].rsplit(" ", 1)[1]
    assert second != secret
    # The store keeps them (the deliveries sign with them) ...
    rows: dict[str, str] = dict(
        store.transact(lambda tx: tx.all("SELECT name, secret FROM kanban_jobs"), write=False)
    )
    assert rows == {"nightly": secret, "weekly": second}
    # ... and nothing a user can run afterwards prints them.
    for args in (
        ("jobs", "show", "nightly"), ("jobs", "show", "nightly", "--json"),
        ("jobs", "show", "weekly", "--json"), ("jobs", "list"), ("jobs", "list", "--json"),
        ("jobs", "pause", "nightly", "--json"), ("jobs", "resume", "nightly", "--json"),
        ("jobs", "run", "nightly", "--json"), ("jobs", "runs", "nightly", "--json"),
    ):  # fmt: skip
        result = run_hermes(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert secret not in result.stdout and second not in result.stdout, args
        assert "secret" not in result.stdout, args
    # Without --deliver there is nothing to sign with.
    assert ok_json("jobs", "add", "quiet", *ALPHA, "--every", "5m")["secret"] is None


def test_json_shapes_of_add_list_show_runs_dead_and_retry(home: HermesHome, store: Store) -> None:
    added = ok_json(
        *ADD, "--step", "alpha:gather", "--step", "beta:report", "--every", "10m",
        "--max-retries", "0", "--timeout", "90s", "--overlap", "queue", "--catchup", "all",
    )  # fmt: skip
    assert set(added) == JOB_KEYS | {"secret"}
    assert added["steps"] == [
        {"profile": "alpha", "prompt": "gather"},
        {"profile": "beta", "prompt": "report"},
    ]
    assert added["schedule"] == {
        "kind": "every", "cron": None, "every": 600.0, "at": None, "timezone": "UTC"
    }  # fmt: skip
    assert (added["max_retries"], added["timeout"], added["overlap"], added["catchup"]) == (
        0,
        90.0,
        "queue",
        "all",
    )
    assert added["schedule_text"] == "every 10m" and added["paused"] is False

    (listed,) = ok_json("jobs", "list")
    assert set(listed) == JOB_KEYS | {"last_run"} and listed["last_run"] is None

    run = ok_json("jobs", "run", "nightly")
    assert set(run) == RUN_KEYS
    assert run["manual"] is True and run["state"] == "active"
    tasks = Jobs(store).run_tasks([run["id"]])[run["id"]]
    assert [t.id for t in tasks] == [run["first_task"], run["last_task"]]
    claimed = store.claim(HOLDER, task_id=tasks[0].id)
    assert claimed is not None
    store.fail(claimed, "the gateway said 503")
    Jobs(store).follow()

    shown = ok_json("jobs", "show", "nightly")
    assert set(shown) == JOB_KEYS | {"next_slots", "runs"}
    assert len(shown["next_slots"]) == 5
    assert shown["next_slots"] == sorted(shown["next_slots"])
    assert shown["next_slots"][0] == shown["next_slot"]
    assert {b - a for a, b in itertools.pairwise(shown["next_slots"])} == {600.0}
    (shown_run,) = shown["runs"]
    assert set(shown_run) == RUN_ROW_KEYS

    (history,) = ok_json("jobs", "runs", "nightly")
    assert set(history) == RUN_ROW_KEYS
    assert history["state"] == "dead_lettered" and history["error"] == "the gateway said 503"
    assert history["attempts"] == 1
    assert history["latency_seconds"] == pytest.approx(history["finished_at"] - history["slot"])
    assert [(t["profile"], t["status"], t["attempts"]) for t in history["tasks"]] == [
        ("alpha", "blocked", 1),
        ("beta", "todo", 0),
    ]
    assert set(history["tasks"][0]) == {"id", "profile", "status", "attempts"}

    (dead,) = ok_json("jobs", "dead")
    assert set(dead) == DEAD_KEYS
    assert (dead["reason"], dead["error"], dead["prompt"], dead["profile"]) == (
        "dead_letter",
        "the gateway said 503",
        "gather",
        "alpha",
    )
    assert (dead["failed_task"], dead["failures"]) == (tasks[0].id, 1)
    assert ok_json("jobs", "dead", "--deliveries") == []

    retried = ok_json("jobs", "retry", str(run["id"]))
    assert set(retried) == RUN_KEYS
    assert retried["state"] == "active" and retried["error"] is None
    assert ok_json("jobs", "dead") == []
    # Once is enough: it is no longer dead-lettered.
    again = run_hermes("jobs", "retry", str(run["id"]))
    assert again.returncode == 1 and len(again.stderr.splitlines()) == 1
    assert "only a dead-lettered run or delivery can be retried" in again.stderr

    (listed,) = ok_json("jobs", "list")
    assert set(listed["last_run"]) == RUN_ROW_KEYS and listed["last_run"]["id"] == run["id"]


def test_pause_resume_rm_and_run_with_json(home: HermesHome) -> None:
    ok_json(*ADD, *ALPHA, "--cron", "*/5 * * * *")
    paused = ok_json("jobs", "pause", "nightly")
    assert paused["paused"] is True and paused["next_slot"] is None
    assert ok_json("jobs", "show", "nightly")["next_slots"] == []
    resumed = ok_json("jobs", "resume", "nightly")
    assert resumed["paused"] is False and resumed["next_slot"] is not None
    assert resumed["next_slot"] % 300 == 0
    first = ok_json("jobs", "run", "nightly")
    second = ok_json("jobs", "run", "nightly")
    assert (first["state"], second["state"]) == ("active", "queued")  # behind the first
    removed = ok_json("jobs", "rm", "nightly")
    assert removed["name"] == "nightly"
    assert ok_json("jobs", "list") == []
    plain = run_hermes("jobs", "list")
    assert plain.stdout == "no jobs\n"


def test_a_pipeline_from_a_yaml_file(home: HermesHome) -> None:
    path = write_yaml(
        home,
        "pipeline.yaml",
        "name: digest\n"
        "cron: '0 7 * * 1-5'\n"
        "timezone: Europe/Berlin\n"
        "retry_delay: 45s\n"
        "steps:\n"
        "  - profile: alpha\n    prompt: collect yesterday's tickets\n"
        "  - profile: beta\n    prompt: write the digest\n",
    )
    added = ok_json("jobs", "add", "--file", path)
    assert added["name"] == "digest"
    assert [s["profile"] for s in added["steps"]] == ["alpha", "beta"]
    assert added["schedule_text"] == "cron 0 7 * * 1-5 (Europe/Berlin)"
    assert added["retry_delay"] == 45.0
    # A name on the command line wins over the file's.
    assert ok_json("jobs", "add", "digest2", "--file", path)["name"] == "digest2"
    shown = run_hermes("jobs", "show", "digest")
    assert shown.returncode == 0
    assert "  step 2     beta: write the digest" in shown.stdout.splitlines()


def test_plain_output_for_people(home: HermesHome, store: Store) -> None:
    assert run_hermes("jobs", "dead").stdout == "the dead-letter queue is empty\n"
    ok_json(*ADD, *ALPHA, "--every", "90s", "--max-retries", "0")
    listing = run_hermes("jobs", "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "SCHEDULE", "NEXT", "SLOT", "LAST", "PROFILES"]
    assert listing[1].split()[:4] == ["nightly", "every", "1m", "30s"]
    assert run_hermes("jobs", "runs", "nightly").stdout == "no runs yet\n"
    run = ok_json("jobs", "run", "nightly")
    claimed = store.claim(HOLDER, task_id=run["first_task"])
    assert claimed is not None
    store.fail(claimed, "timeout after 90s")
    Jobs(store).follow()
    (line,) = run_hermes("jobs", "dead").stdout.splitlines()
    assert line.startswith(f"run {run['id']}  nightly  slot {run['slot_name']}  alpha  ")
    assert line.endswith("attempts 1: timeout after 90s")
    runs = run_hermes("jobs", "runs", "nightly").stdout.splitlines()
    assert runs[1].split()[0] == str(run["id"]) and "dead_lettered" in runs[1]
