"""`hermes jobs ...`: scheduled jobs and pipelines on the board (docs/jobs.md).

Every command takes --json; bad input (a bad cron expression, an unknown profile, a
duration out of range) exits 2 with one line and writes nothing: the job is checked in
full before the store is opened.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("jobs", help="scheduled jobs and pipelines on the board")
    sub = parser.add_subparsers(dest="jobs_command", metavar="<action>", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("add", parents=[common], help="add a job (prints its delivery secret once)")
    p.add_argument("name", nargs="?", help="the job's name (or `name:` in --file)")
    p.add_argument("--profile", dest="job_profile", metavar="PROFILE", help="who runs it")
    p.add_argument("--prompt", help="what the profile is asked")
    p.add_argument(
        "--step",
        action="append",
        default=[],
        metavar="PROFILE:PROMPT",
        help="a pipeline step (repeat: each starts when the one before is done)",
    )
    p.add_argument("--file", metavar="YAML", help="the job as a YAML mapping of these options")
    when = p.add_argument_group("schedule (exactly one)")
    when.add_argument("--cron", metavar="EXPR", help="a cron expression, e.g. '*/15 * * * *'")
    when.add_argument("--every", metavar="DURATION", help="an interval, e.g. 90s, 15m, 1h30m")
    when.add_argument("--at", metavar="TIME", help="once, at an ISO time")
    p.add_argument("--timezone", metavar="TZ", help="the zone cron fields are read in (UTC)")
    p.add_argument("--max-retries", metavar="N", help="retries after the first attempt (3)")
    p.add_argument("--retry-delay", metavar="DURATION", help="first retry delay (30s)")
    p.add_argument("--retry-max-delay", metavar="DURATION", help="longest retry delay (10m)")
    p.add_argument("--timeout", metavar="DURATION", help="one attempt's limit")
    p.add_argument("--overlap", choices=("skip", "queue"), help="a slot while a run is in flight")
    p.add_argument("--catchup", choices=("none", "latest", "all"), help="slots missed in downtime")
    p.add_argument("--deliver", metavar="URL", help="POST each result here, signed")
    p.add_argument("--board", help="the board its tasks go on (default)")
    p.set_defaults(handler=_add)

    p = sub.add_parser("list", parents=[common], help="every job with its next slot")
    p.set_defaults(handler=_list, as_root="keep", setup_logging=False)

    p = sub.add_parser("show", parents=[common], help="a job, its next slots and last runs")
    p.add_argument("name")
    p.set_defaults(handler=_show, as_root="keep", setup_logging=False)

    for name, text in (
        ("pause", "stop a job's slots from firing"),
        ("resume", "let a paused job's slots fire again (missed ones are not caught up)"),
        ("rm", "remove a job (its history stays)"),
        ("run", "run a job now, once, outside its schedule"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("name")
        p.set_defaults(handler=_simple)

    p = sub.add_parser("runs", parents=[common], help="a job's run history")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=_runs, as_root="keep", setup_logging=False)

    p = sub.add_parser("dead", parents=[common], help="the dead-letter queue")
    p.add_argument("--deliveries", action="store_true", help="deliveries that kept failing")
    p.set_defaults(handler=_dead, as_root="keep", setup_logging=False)

    p = sub.add_parser(
        "retry", parents=[common], help="run a dead-lettered run (or delivery) again"
    )
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.set_defaults(handler=_retry)

    p = sub.add_parser("events", parents=[common], help="the jobs' events (a view of the ledger)")
    p.add_argument("--job", help="only this job's events")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--since", metavar="ID|TIME", help="ledger id, ISO time, or 15m/2h/1d ago")
    p.set_defaults(handler=_events)


# -- helpers ---------------------------------------------------------------------------


def _open() -> Any:
    from hermes_container.home import HermesHome
    from hermes_container.kanban.jobs.api import Jobs
    from hermes_container.kanban.store import open_store

    return Jobs(open_store(HermesHome.from_env()))


def _emit(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def _settings() -> Any:
    from hermes_container.home import HermesHome
    from hermes_container.kanban.settings import SettingsFile

    return SettingsFile(HermesHome.from_env()).read().jobs


_FILE_EXCLUSIVE = (
    "prompt", "step", "cron", "every", "at", "timezone", "max_retries", "retry_delay",
    "retry_max_delay", "timeout", "overlap", "catchup", "deliver", "board",
)  # fmt: skip


def _spec_from(args: argparse.Namespace) -> Any:
    from hermes_container.errors import ConfigError, UsageError
    from hermes_container.kanban.jobs import spec as specs

    if args.file:
        from pathlib import Path

        from hermes_container.config import load_yaml

        given = [f"--{name.replace('_', '-')}" for name in _FILE_EXCLUSIVE if getattr(args, name)]
        if args.job_profile:
            given.append("--profile")
        if given:
            # Silently preferring one of two answers would run a job nobody asked for.
            raise UsageError(f"--file holds the whole job: drop {', '.join(given)}")

        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"--file {args.file}: no such file")
        try:
            raw = load_yaml(path)
        except ConfigError as exc:  # bad input to this command: exit 2, not EX_CONFIG
            raise UsageError(exc.message) from None
        if args.name:
            raw = {**raw, "name": args.name}
        return specs.from_mapping(raw, args.file)
    if args.step and (args.job_profile or args.prompt):
        raise UsageError("give --profile and --prompt, or --step ..., not both")
    if args.step:
        steps = tuple(specs.parse_step(text) for text in args.step)
    else:
        if not args.job_profile or args.prompt is None:
            raise UsageError("a job needs --profile and --prompt (or --step PROFILE:PROMPT)")
        steps = (specs.Step(args.job_profile, args.prompt),)
    return specs.build(
        name=args.name,
        steps=steps,
        cron=args.cron,
        every=args.every,
        at=args.at,
        timezone=args.timezone,
        board=args.board,
        max_retries=args.max_retries,
        retry_delay=args.retry_delay,
        retry_max_delay=args.retry_max_delay,
        timeout=args.timeout,
        overlap=args.overlap,
        catchup=args.catchup,
        deliver=args.deliver,
    )


def _check_profiles(spec: Any) -> None:
    from hermes_container.errors import UsageError
    from hermes_container.home import HermesHome
    from hermes_container.profiles import list_profiles

    known = set(list_profiles(HermesHome.from_env()))
    missing = [p for p in spec.profiles if p not in known]
    if missing:
        raise UsageError(f"unknown profile(s): {', '.join(missing)} (see `hermes profile list`)")


def _run_line(run: Any, tasks: list[Any]) -> str:
    last = tasks[-1] if tasks else None
    attempts = sum(t.attempts for t in tasks)
    latency = "-"
    if run.finished_at is not None:
        latency = f"{run.finished_at - run.slot:.1f}s"
    delivery = f" delivery={run.delivery}" if run.delivery else ""
    error = f"  {run.error}" if run.error else ""
    who = last.assignee if last is not None else "-"
    return (
        f"{run.id:>6}  {_when(run.slot)}  {run.state:<13} {attempts:>3}  {latency:>8}  "
        f"{who}{delivery}{error}"
    )


def _run_json(run: Any, tasks: list[Any]) -> dict[str, Any]:
    data: dict[str, Any] = run.to_json()
    data["tasks"] = [
        {"id": t.id, "profile": t.assignee, "status": t.status, "attempts": t.attempts}
        for t in tasks
    ]
    data["attempts"] = sum(t.attempts for t in tasks)
    data["latency_seconds"] = None if run.finished_at is None else run.finished_at - run.slot
    return data


# -- commands --------------------------------------------------------------------------


def _add(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError

    spec = _spec_from(args)
    _check_profiles(spec)
    if spec.schedule.kind == "at" and (spec.schedule.at or 0.0) <= time.time():
        # Refused before the store is opened (book.add checks again against the store's
        # clock), so a fresh home gets no kanban.db from bad input.
        raise UsageError("--at is in the past: a one-time job must fire later than now")
    jobs = _open()
    try:
        job, secret = jobs.add(spec)
    finally:
        jobs.store.close()
    if args.json:
        _emit({**job.to_json(), "secret": secret})
        return 0
    print(f"job {job.name}: {job.spec.schedule.describe()}, next slot {_when(job.next_slot)}")
    if secret:
        print(f"delivery secret (shown once; the receiver checks X-Hermes-Signature-256): {secret}")
    return 0


def _list(args: argparse.Namespace) -> int:
    jobs = _open()
    try:
        found = jobs.all()
        last = {job.name: jobs.runs(job.name, limit=1) for job in found}
    finally:
        jobs.store.close()
    if args.json:
        _emit(
            [
                {
                    **job.to_json(),
                    "last_run": _run_json(*last[job.name][0]) if last[job.name] else None,
                }
                for job in found
            ]
        )
        return 0
    if not found:
        print("no jobs")
        return 0
    print(f"{'NAME':<20} {'SCHEDULE':<34} {'NEXT SLOT':<21} {'LAST':<13} PROFILES")
    for job in found:
        runs = last[job.name]
        state = runs[0][0].state if runs else "-"
        nxt = "paused" if job.paused else _when(job.next_slot)
        profiles = ",".join(job.spec.profiles)
        print(f"{job.name:<20} {job.spec.schedule.describe():<34} {nxt:<21} {state:<13} {profiles}")
    return 0


def _show(args: argparse.Namespace) -> int:
    jobs = _open()
    try:
        job = jobs.get(args.name)
        runs = jobs.runs(job.name, limit=10)
        now = jobs.store.now()
    finally:
        jobs.store.close()
    preview = []
    if not job.paused and job.next_slot is not None:  # the stored next slot, then the later
        later = job.spec.schedule.preview(max(now, job.next_slot), job.anchor, 4)
        preview = [job.next_slot, *later]
    if args.json:
        _emit({**job.to_json(), "next_slots": preview, "runs": [_run_json(r, t) for r, t in runs]})
        return 0
    spec = job.spec
    print(f"job {job.name} on board {spec.board}{' (paused)' if job.paused else ''}")
    print(f"  schedule   {spec.schedule.describe()}")
    print(f"  next slots {', '.join(_when(s) for s in preview) or '-'}")
    for index, step in enumerate(spec.steps, start=1):
        prompt = step.prompt if len(step.prompt) <= 60 else step.prompt[:57] + "..."
        print(f"  step {index}     {step.profile}: {prompt}")
    print(
        f"  retries    {spec.max_retries} (delay {spec.retry_delay:g}s up to "
        f"{spec.retry_max_delay:g}s), timeout {spec.timeout or '-'}, overlap {spec.overlap}, "
        f"catchup {spec.catchup}"
    )
    print(f"  deliver    {spec.deliver or '-'}")
    if runs:
        print("  last runs:")
        for run, tasks in runs:
            print("  " + _run_line(run, tasks))
    return 0


def _simple(args: argparse.Namespace) -> int:
    jobs = _open()
    try:
        action = args.jobs_command
        if action == "run":
            run = jobs.run_now(args.name, _settings())
            result: dict[str, Any] = run.to_json()
            text = f"run {run.id} of {run.job}: {run.state}"
        else:
            job = {"pause": jobs.pause, "resume": jobs.resume, "rm": jobs.remove}[action](args.name)
            result = job.to_json()
            text = {
                "pause": f"job {job.name} paused",
                "resume": f"job {job.name} resumed, next slot {_when(job.next_slot)}",
                "rm": f"job {job.name} removed",
            }[action]
    finally:
        jobs.store.close()
    if args.json:
        _emit(result)
    else:
        print(text)
    return 0


def _runs(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError

    if not 1 <= args.limit <= 10_000:
        raise UsageError("--limit must be between 1 and 10000")
    jobs = _open()
    try:
        runs = jobs.runs(args.name, limit=args.limit)
        if not runs:
            jobs.get(args.name)  # NotFound for an unknown job (a removed one keeps its runs)
    finally:
        jobs.store.close()
    if args.json:
        _emit([_run_json(r, t) for r, t in runs])
        return 0
    if not runs:
        print("no runs yet")
        return 0
    print(f"{'RUN':>6}  {'SLOT':<20}  {'OUTCOME':<13} {'TRY':>3}  {'LATENCY':>8}  PROFILE")
    for run, tasks in runs:
        print(_run_line(run, tasks))
    return 0


def _dead(args: argparse.Namespace) -> int:
    jobs = _open()
    try:
        found = jobs.dead(deliveries=args.deliveries)
    finally:
        jobs.store.close()
    rows = []
    for run, tasks in found:
        failed = next((t for t in tasks if t.status == "blocked"), tasks[-1] if tasks else None)
        rows.append(
            {
                **_run_json(run, tasks),
                "reason": "delivery_dead_letter" if args.deliveries else "dead_letter",
                "failed_task": None if failed is None else failed.id,
                "profile": None if failed is None else failed.assignee,
                "error": run.delivery_error if args.deliveries else (failed and failed.last_error),
                "prompt": None if failed is None else failed.body,
                "failures": None if failed is None else failed.consecutive_failures,
            }
        )
    if args.json:
        _emit(rows)
        return 0
    if not rows:
        print("the dead-letter queue is empty")
        return 0
    for row in rows:
        print(
            f"run {row['id']}  {row['job']}  slot {row['slot_name']}  {row['profile'] or '-'}  "
            f"attempts {row['failures'] if not args.deliveries else row['delivery_attempts']}: "
            f"{row['error'] or '-'}"
        )
    return 0


def _retry(args: argparse.Namespace) -> int:
    jobs = _open()
    try:
        run = jobs.retry(args.run_id)
    finally:
        jobs.store.close()
    if args.json:
        _emit(run.to_json())
    else:
        print(
            f"run {run.id} of {run.job}: {run.state}"
            + (f", delivery {run.delivery}" if run.delivery else "")
        )
    return 0


def _events(args: argparse.Namespace) -> int:
    from hermes_container.commands.events import parse_since, print_events
    from hermes_container.events.append import open_ledger
    from hermes_container.home import HermesHome
    from hermes_container.kanban.jobs.output import JOB_KIND_PREFIX
    from hermes_container.kanban.jobs.spec import validate_job_name

    job = validate_job_name(args.job) if args.job is not None else None
    after, since = parse_since(args.since) if args.since else (0, None)
    ledger = open_ledger(HermesHome.from_env().root)
    return print_events(
        ledger,
        after or 0,
        {"kind": JOB_KIND_PREFIX, "since": since},
        follow=args.follow,
        limit=None,
        as_json=args.json,
        keep=None if job is None else (lambda event: event.data.get("job") == job),
    )
