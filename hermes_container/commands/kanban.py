"""`hermes kanban ...`: the board from the command line, and the dispatcher.

Every command takes --json; bad input exits 2 with one line and changes nothing (the
store validates before it writes, argparse before the store is opened).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

STATUS_CHOICES = ("triage", "todo", "ready", "running", "blocked", "done", "archived")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, not {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("kanban", help="the task board and its dispatcher")
    sub = parser.add_subparsers(dest="kanban_command", metavar="<action>", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--board", default=None, help="board slug (default: default)")

    p = sub.add_parser("create", parents=[common], help="create a task; prints its id")
    p.add_argument("title")
    p.add_argument("--body", default="")
    p.add_argument("--assignee", help="the profile to run it")
    p.add_argument("--priority", type=_int, default=0, help="higher runs first")
    p.add_argument("--parent", type=_positive_int, action="append", default=[], metavar="ID")
    p.add_argument("--max-retries", type=_count)
    p.add_argument("--max-runtime", type=_seconds, metavar="SECONDS")
    p.add_argument("--idempotency-key", metavar="KEY")
    p.add_argument("--triage", action="store_true", help="park it in triage")
    p.set_defaults(handler=_create)

    p = sub.add_parser("list", parents=[common], help="list tasks")
    p.add_argument("--status", choices=STATUS_CHOICES)
    p.add_argument("--assignee")
    p.add_argument("--limit", type=_positive_int)
    p.set_defaults(handler=_list)

    p = sub.add_parser("show", parents=[common], help="a task with its runs and events")
    p.add_argument("id", type=_positive_int)
    p.set_defaults(handler=_show)

    p = sub.add_parser("assign", parents=[common], help="assign a task to a profile")
    p.add_argument("id", type=_positive_int)
    p.add_argument("profile", help="a profile name, or 'none'")
    p.set_defaults(handler=_assign)

    p = sub.add_parser("comment", parents=[common], help="add a comment (the task sees it)")
    p.add_argument("id", type=_positive_int)
    p.add_argument("text")
    p.add_argument("--author")
    p.set_defaults(handler=_comment)

    p = sub.add_parser("block", parents=[common], help="block a task (needs a person)")
    p.add_argument("id", type=_positive_int)
    p.add_argument("reason")
    p.set_defaults(handler=_simple, action="block")

    for name, text in (
        ("unblock", "give a blocked or triage task another go"),
        ("archive", "archive a task"),
        ("reclaim", "take a running task back to ready (no failure counted)"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id", type=_positive_int)
        p.set_defaults(handler=_simple, action=name)

    p = sub.add_parser("dispatch", parents=[common], help="run one dispatcher tick now")
    p.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p.add_argument("--max", type=_positive_int, metavar="N", help="start at most N tasks")
    p.set_defaults(handler=_dispatch)

    p = sub.add_parser("tail", parents=[common], help="print the board's events")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--since", type=_count, default=None, metavar="EVENT_ID")
    p.add_argument("--task", type=_positive_int, metavar="ID")
    p.set_defaults(handler=_tail)

    p = sub.add_parser("boards", parents=[common], help="list, create or archive boards")
    p.add_argument("boards_action", nargs="?", choices=("list", "create", "archive"))
    p.add_argument("slug", nargs="?")
    p.add_argument("--all", action="store_true", help="list archived boards too")
    p.set_defaults(handler=_boards)

    p = sub.add_parser("stats", parents=[common], help="counts per status and profile")
    p.set_defaults(handler=_stats)

    p = sub.add_parser("daemon", parents=[common], help="run the dispatcher until stopped")
    p.set_defaults(handler=_daemon)


# -- helpers ---------------------------------------------------------------------------


def _open() -> Any:
    from hermes_container.home import HermesHome
    from hermes_container.kanban.store import open_store

    return open_store(HermesHome.from_env())


def _board(args: argparse.Namespace) -> str:
    from hermes_container.kanban.boards import validate_slug
    from hermes_container.kanban.model import DEFAULT_BOARD

    return validate_slug(args.board) if args.board is not None else DEFAULT_BOARD


def _emit(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _task_json(task: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(task)
    data["parents"] = list(task.parents)
    return data


def _age(seconds: float) -> str:
    from hermes_container.timeutil import format_duration

    return format_duration(max(0.0, seconds), parts=1)


def _print_task_line(task: Any, now: float) -> None:
    assignee = task.assignee or "-"
    print(
        f"{task.id:>6}  {task.status:<8} {assignee:<16} {task.priority:>4} "
        f"{task.attempts:>3}  {_age(now - task.created_at):>6}  {task.title}"
    )


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


# -- commands --------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    board = _board(args)  # before the database is opened (or created): bad input changes nothing
    store = _open()
    try:
        task = store.create_task(
            args.title,
            board=board,
            body=args.body,
            assignee=args.assignee,
            priority=args.priority,
            parents=args.parent,
            max_retries=args.max_retries,
            max_runtime=args.max_runtime,
            idempotency_key=args.idempotency_key,
            triage=args.triage,
        )
    finally:
        store.close()
    if args.json:
        _emit(_task_json(task))
    else:
        print(task.id)
    return 0


def _list(args: argparse.Namespace) -> int:
    board = _board(args)
    store = _open()
    try:
        tasks = store.list_tasks(
            board=board, status=args.status, assignee=args.assignee, limit=args.limit
        )
        now = store.now()
    finally:
        store.close()
    if args.json:
        _emit([_task_json(t) for t in tasks])
        return 0
    if not tasks:
        print("no tasks")
        return 0
    print(f"{'ID':>6}  {'STATUS':<8} {'ASSIGNEE':<16} {'PRI':>4} {'TRY':>3}  {'AGE':>6}  TITLE")
    for task in tasks:
        _print_task_line(task, now)
    return 0


def _show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    store = _open()
    try:
        task = store.get_task(args.id)
        runs = store.runs_of(args.id)
        events = store.events_since(0, task_id=args.id, limit=10_000)
    finally:
        store.close()
    if args.json:
        data = _task_json(task)
        # The run token is the holder's secret: never printed.
        data["runs"] = [{k: v for k, v in asdict(r).items() if k != "token"} for r in runs]
        data["events"] = [asdict(e) for e in events]
        _emit(data)
        return 0
    print(f"Task #{task.id}: {task.title}")
    print(f"  board {task.board}  status {task.status}  assignee {task.assignee or '-'}")
    print(
        f"  priority {task.priority}  attempts {task.attempts}  "
        f"consecutive failures {task.consecutive_failures}"
    )
    if task.parents:
        print(f"  parents {', '.join(f'#{p}' for p in task.parents)}")
    if task.max_retries is not None or task.max_runtime is not None:
        print(f"  max_retries {task.max_retries}  max_runtime {task.max_runtime}")
    if task.idempotency_key:
        print(f"  idempotency key {task.idempotency_key}")
    print(f"  created {_when(task.created_at)}")
    if task.body:
        print("\n" + task.body)
    if task.last_error:
        print(f"\nLast error: {task.last_error}")
    if task.result is not None:
        print("\nResult:\n" + task.result)
    if runs:
        print("\nRuns:")
        for run in runs:
            took = f" {run.latency_ms} ms" if run.latency_ms is not None else ""
            tokens = f" {run.tokens} tokens" if run.tokens is not None else ""
            error = f": {run.error}" if run.error else ""
            print(
                f"  {run.id}: {_when(run.claimed_at)} by {run.host} pid {run.pid} -> "
                f"{run.outcome or 'open'}{took}{tokens}{error}"
            )
    print("\nEvents:")
    for event in events:
        print(f"  {event.id}: {_when(event.at)} {event.kind} {_data_text(event.data)}")
    return 0


def _data_text(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items() if v is not None)


def _assign(args: argparse.Namespace) -> int:
    from hermes_container.home import HermesHome
    from hermes_container.profiles import profile_exists

    profile = None if args.profile == "none" else args.profile
    store = _open()
    try:
        task = store.assign(args.id, profile, source="cli")
    finally:
        store.close()
    if profile is not None and not profile_exists(HermesHome.from_env(), profile):
        print(
            f"hermes: note: {profile!r} is not a profile here; a dispatcher that hosts it "
            "must run the task",
            file=sys.stderr,
        )
    if args.json:
        _emit(_task_json(task))
    else:
        print(f"Task #{task.id} assigned to {task.assignee or 'nobody'}")
    return 0


def _comment(args: argparse.Namespace) -> int:
    store = _open()
    try:
        task = store.comment(args.id, args.text, author=args.author)
    finally:
        store.close()
    if args.json:
        _emit(_task_json(task))
    else:
        print(f"Comment added to task #{task.id}")
    return 0


def _simple(args: argparse.Namespace) -> int:
    from hermes_container.kanban.errors import InvalidTransition

    store = _open()
    try:
        if args.action == "block":
            task = store.block(args.id, args.reason)
        elif args.action == "unblock":
            task = store.unblock(args.id)
        elif args.action == "archive":
            task = store.archive(args.id)
        else:
            current = store.get_task(args.id)
            if current.status != "running" or current.current_run is None:
                raise InvalidTransition(
                    f"cannot reclaim task {current.id}: it is {current.status}, not running"
                )
            task = store.release(current.current_run, reason="reclaimed by hand")
    finally:
        store.close()
    if args.json:
        _emit(_task_json(task))
    else:
        print(f"Task #{task.id} is {task.status}")
    return 0


def _ids(values: list[int]) -> str:
    return ", ".join(f"#{v}" for v in values)


def print_report(report: Any) -> None:
    """The tick in words; the first two line shapes are upstream hermes's own."""
    if report.auto_assigned_default:
        print(
            f"Auto-assigned to kanban.default_assignee={report.default_assignee!r}: "
            f"{_ids(report.auto_assigned_default)}"
        )
    deferred: dict[tuple[str, int], list[int]] = {}
    for entry in report.skipped_per_profile_capped:
        deferred.setdefault((entry["assignee"], entry["current"]), []).append(entry["task_id"])
    for (assignee, current), ids in sorted(deferred.items()):
        print(f"Deferred ({assignee} at per-profile cap, {current} running): {_ids(ids)}")
    if report.spawned:
        spawned = ", ".join(f"#{s['task_id']} ({s['assignee']})" for s in report.spawned)
        print(f"{'Would spawn' if report.dry_run else 'Spawned'}: {spawned}")
    for label, ids in (
        ("Reclaimed", report.reclaimed),
        ("Promoted", report.promoted),
        ("Timed out", report.timed_out),
        ("Skipped (no assignee, no default)", report.skipped_unassigned),
        ("Skipped (assignee is not a profile here)", report.skipped_nonspawnable),
        ("Skipped (gateway not running)", report.skipped_gateway_down),
        ("Held back (board cap)", report.skipped_board_capped),
        ("Taken by another dispatcher", report.skipped_taken),
        ("Completed", report.completed),
        ("Failed, retry scheduled", report.failed),
        ("Rate-limited, retry later", report.rate_limited),
        ("Gave up (blocked)", report.gave_up),
    ):
        if ids:
            print(f"{label}: {_ids(ids)}")
    for warning in report.warnings:
        print(f"hermes: warning: {warning}", file=sys.stderr)
    if not any(
        getattr(report, name)
        for name in ("spawned", "reclaimed", "promoted", "timed_out", "gave_up")
    ):
        print("Nothing to dispatch")


def _dispatch(args: argparse.Namespace) -> int:
    from hermes_container.home import HermesHome
    from hermes_container.kanban.dispatcher import Dispatcher
    from hermes_container.kanban.errors import NotFound

    board = _board(args)
    store = _open()
    try:
        if board not in {b.slug for b in store.list_boards(include_archived=True)}:
            raise NotFound(f"no board {board!r}")
        dispatcher = Dispatcher(HermesHome.from_env(), store)
        # Warnings go into the report (printed below), not through logging too.
        dispatcher._warned.update(dispatcher._settings().warnings)
        report = dispatcher.tick(board, dry_run=args.dry_run, max_spawn=args.max)
        # The foreground tick returns once what it started has finished, so cron and
        # scripts on a host without the daemon can rely on it.
        for outcome in dispatcher.wait_all():
            report.add_outcome(outcome)
        dispatcher.close()
    finally:
        store.close()
    if args.json:
        _emit(report.to_json())
    else:
        print_report(report)
    return 0


def _event_json(event: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(event)


def _print_event(event: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_event_json(event), sort_keys=True), flush=True)
    else:
        print(
            f"{event.id} {_when(event.at)} {event.board} #{event.task_id} {event.kind} "
            f"{_data_text(event.data)}".rstrip(),
            flush=True,
        )


def _tail(args: argparse.Namespace) -> int:
    from hermes_container.kanban import wake

    board = _board(args) if args.board is not None else None
    store = _open()
    try:
        after = args.since
        if after is None:
            # Like tail(1): the last 20 events, then (with --follow) what comes.
            recent = _last_events(store, board, args.task, 20)
            after = recent[0].id - 1 if recent else 0
        listener = store.listen() if args.follow else None
        try:
            while True:
                while True:
                    page = store.events_since(after, board=board, task_id=args.task, limit=1000)
                    for event in page:
                        _print_event(event, args.json)
                    if page:
                        after = page[-1].id
                    if len(page) < 1000:
                        break
                if listener is None:
                    return 0
                # A lost wake-up costs at most this long.
                wake.wait(listener, 5.0)
        finally:
            if listener is not None:
                listener.close()
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()


def _last_events(store: Any, board: str | None, task: int | None, count: int) -> list[Any]:
    """The last `count` events (oldest first), found without reading the whole ledger.

    events_since has no reverse scan, so this searches for the largest id `after`
    that still has `count` matching events beyond it: a few dozen indexed queries of
    `count` rows each, however long the ledger is."""

    def beyond(after: int) -> list[Any]:
        return list(store.events_since(after, board=board, task_id=task, limit=count))

    first = beyond(0)
    if len(first) < count:
        return first
    low, high = 0, 1  # beyond(low) holds `count` events; find a high that does not
    while len(beyond(high)) >= count:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if len(beyond(middle)) >= count:
            low = middle
        else:
            high = middle
    return beyond(low)


def _boards(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from hermes_container.errors import UsageError

    action = args.boards_action or "list"
    if action != "list" and not args.slug:
        raise UsageError(f"`kanban boards {action}` needs a board slug")
    if action == "list" and args.slug:
        raise UsageError("`kanban boards list` takes no slug")
    store = _open()
    try:
        if action == "create":
            result: Any = store.create_board(args.slug)
        elif action == "archive":
            result = store.archive_board(args.slug)
        else:
            result = store.list_boards(include_archived=args.all)
    finally:
        store.close()
    if args.json:
        _emit([asdict(b) for b in result] if isinstance(result, list) else asdict(result))
    elif isinstance(result, list):
        for board in result:
            note = "  (archived)" if board.archived_at else ""
            print(f"{board.slug}{note}")
    else:
        print(f"Board {result.slug} {'archived' if result.archived_at else 'created'}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from hermes_container.home import HermesHome
    from hermes_container.kanban.settings import SettingsFile

    board = _board(args)
    store = _open()
    try:
        tasks = store.list_tasks(board=board)
        running = store.running_counts(board)
    finally:
        store.close()
    settings = SettingsFile(HermesHome.from_env()).read()
    by_status: dict[str, int] = {s: 0 for s in STATUS_CHOICES}
    by_assignee: dict[str, dict[str, int]] = {}
    for task in tasks:
        by_status[task.status] += 1
        per = by_assignee.setdefault(task.assignee or "-", {})
        per[task.status] = per.get(task.status, 0) + 1
    data = {
        "board": board,
        "total": len(tasks),
        "by_status": by_status,
        "by_assignee": by_assignee,
        "running": running,
        "max_in_progress": settings.max_in_progress,
        "max_in_progress_per_profile": settings.max_in_progress_per_profile,
    }
    if args.json:
        _emit(data)
        return 0
    print(f"Board {board}: {len(tasks)} task(s)")
    print("  " + "  ".join(f"{s} {n}" for s, n in by_status.items()))
    cap = settings.max_in_progress_per_profile
    for assignee, counts in sorted(by_assignee.items()):
        shown = "  ".join(f"{s} {n}" for s, n in sorted(counts.items()))
        limit = f" (running {running.get(assignee, 0)}/{cap})" if cap else ""
        print(f"  {assignee}: {shown}{limit}")
    return 0


def _daemon(args: argparse.Namespace) -> int:
    import logging

    from hermes_container.home import HermesHome
    from hermes_container.kanban.daemon import Daemon

    # Its log is a service log: INFO lines with a time, to stdout for s6-log.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("hermes.kanban", "hermes.jobs"):  # the dispatcher and its jobs scheduler
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    boards = [_board(args)] if args.board is not None else None
    store = _open()
    try:
        Daemon(HermesHome.from_env(), store, boards=boards).run()
    finally:
        store.close()
    return 0
