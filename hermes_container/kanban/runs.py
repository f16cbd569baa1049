"""Running a task: claim (ready -> running), then complete, fail, rate-limit or release.

Only the holder of a task's current run — the one that knows the run's token — may
complete, fail or rate-limit it; `release` and `time_out` are for whoever found the
holder gone or late (a dispatcher's tick), so they name the run by id alone.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Collection, Sequence

from hermes_container.errors import UsageError
from hermes_container.kanban import boards, rows
from hermes_container.kanban.errors import NotHolder
from hermes_container.kanban.model import (
    BLOCKED,
    DONE,
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    OUTCOME_RATE_LIMITED,
    OUTCOME_RECLAIMED,
    OUTCOME_TIMED_OUT,
    READY,
    RUNNING,
    TODO,
    ClaimLimits,
    Holder,
    RetryPolicy,
    Run,
    Task,
)
from hermes_container.kanban.rows import RUN_COLUMNS, load_run, load_task, run_from_row
from hermes_container.kanban.tx import Row, Tx, placeholders


def cap(value: int | None) -> int | None:
    """A positive integer is a cap; anything else means none (the config layer warns)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def running_counts(tx: Tx, board: str) -> dict[str, int]:
    """Running tasks per assignee on `board` (the task row is the source of truth)."""
    rows = tx.all(
        "SELECT assignee, COUNT(*) FROM kanban_tasks WHERE board = ? AND status = ? "
        "AND assignee IS NOT NULL GROUP BY assignee",
        (board, RUNNING),
    )
    return {row[0]: int(row[1]) for row in rows}


def claim(
    tx: Tx,
    board: str,
    holder: Holder,
    limits: ClaimLimits,
    assignees: Collection[str] | None,
    task_id: int | None = None,
) -> Run | None:
    """Move the best ready task under the caps (or task `task_id`, if it is ready and
    under them) to running and open its run, or None.

    The caps are read and the claim is written in one transaction, and claims on a board
    are serialised: on SQLite by BEGIN IMMEDIATE (the store's one writer); on PostgreSQL
    by a lock on the board's row. Row locks on the tasks alone would not do there: two
    dispatchers could each see 1 of 2 slots free, lock different tasks and both claim.
    The board row rather than an advisory lock: it needs no key scheme, cannot collide
    across boards, and archiving a board waits for claims in flight. SKIP LOCKED on the
    candidate keeps a claim from waiting behind a task another writer is changing.
    """
    boards.require(tx, board, lock=True)
    if assignees is not None and not assignees:
        return None
    counts = running_counts(tx, board)
    board_cap = cap(limits.max_in_progress)
    if board_cap is not None and sum(counts.values()) >= board_cap:
        return None
    sql = (
        "SELECT id, assignee FROM kanban_tasks WHERE board = ? AND status = ? "
        "AND assignee IS NOT NULL AND (not_before IS NULL OR not_before <= ?)"
    )
    params: list[object] = [board, READY, tx.now]
    profile_cap = cap(limits.max_in_progress_per_profile)
    full = sorted(a for a, n in counts.items() if profile_cap is not None and n >= profile_cap)
    if full:
        sql += f" AND assignee NOT IN ({placeholders(len(full))})"
        params.extend(full)
    if assignees is not None:
        wanted = sorted(set(assignees))
        sql += f" AND assignee IN ({placeholders(len(wanted))})"
        params.extend(wanted)
    if task_id is not None:
        sql += " AND id = ?"
        params.append(task_id)
    row = tx.one(
        sql + " ORDER BY priority DESC, created_at, id LIMIT 1" + tx.dialect.skip_locked, params
    )
    if row is None:
        return None
    return _take(tx, board, holder, limits, [(int(row[0]), row[1])])[0]


def claim_tasks(
    tx: Tx, board: str, holder: Holder, limits: ClaimLimits, task_ids: Sequence[int]
) -> list[Run]:
    """Claim each of `task_ids` (in that order) that is still ready, due and under the
    caps, in one transaction: what a dispatcher's tick decided to start, for the price
    of one commit instead of one per task. The caps are checked as in `claim`, counting
    the claims made earlier in the same call."""
    boards.require(tx, board, lock=True)
    wanted = list(dict.fromkeys(task_ids))
    if not wanted:
        return []
    counts = running_counts(tx, board)
    total = sum(counts.values())
    board_cap = cap(limits.max_in_progress)
    profile_cap = cap(limits.max_in_progress_per_profile)
    # By id, not by kanban_tasks_order: SQLite, without statistics, estimates that index's
    # (board, status) cheaper than the rowid lookups of 8 or more ids and walks every
    # ready task (0.3 ms a claim with 2,000 ready, growing with the queue); the unary +
    # keeps it off. PostgreSQL takes the primary key by itself.
    plus = tx.dialect.unindexed
    rows = tx.all(
        f"SELECT id, assignee FROM kanban_tasks WHERE id IN ({placeholders(len(wanted))}) "
        f"AND {plus}board = ? AND {plus}status = ? AND assignee IS NOT NULL "
        "AND (not_before IS NULL OR not_before <= ?)" + tx.dialect.skip_locked,
        [*wanted, board, READY, tx.now],
    )
    ready = {int(row[0]): row[1] for row in rows}
    picks: list[tuple[int, str]] = []
    for task_id in wanted:
        assignee = ready.get(task_id)
        if assignee is None:
            continue  # taken, changed or not due meanwhile
        if board_cap is not None and total >= board_cap:
            break
        if profile_cap is not None and counts.get(assignee, 0) >= profile_cap:
            continue
        picks.append((task_id, assignee))
        counts[assignee] = counts.get(assignee, 0) + 1
        total += 1
    return _take(tx, board, holder, limits, picks) if picks else []


# Rows per INSERT of runs: far under SQLite's bound-parameter limit (6 per row).
_TAKE_CHUNK = 100


def _take(
    tx: Tx, board: str, holder: Holder, limits: ClaimLimits, picks: Sequence[tuple[int, str]]
) -> list[Run]:
    """ready -> running for the (task id, assignee) pairs the caller found claimable
    under its locks, in that order: one INSERT of their runs and one UPDATE statement
    run for all of them, not two statements per task."""
    expires = tx.now + max(1.0, float(limits.claim_ttl_seconds))
    tokens = {task_id: secrets.token_hex(16) for task_id, _ in picks}
    run_ids: dict[int, int] = {}
    for start in range(0, len(picks), _TAKE_CHUNK):
        chunk = picks[start : start + _TAKE_CHUNK]
        # RETURNING's row order is unspecified (SQLite): each row names its task.
        rows = tx.all(
            "INSERT INTO kanban_runs (task_id, host, pid, token, claimed_at, claim_expires_at) "
            f"VALUES {', '.join(['(?, ?, ?, ?, ?, ?)'] * len(chunk))} RETURNING task_id, id",
            [
                value
                for task_id, _ in chunk
                for value in (task_id, holder.host, holder.pid, tokens[task_id], tx.now, expires)
            ],
        )
        run_ids.update((int(task_id), int(run_id)) for task_id, run_id in rows)
    # Compare-and-set from ready: under the locks above it cannot miss, and if it ever
    # did the exception rolls the run rows back with it.
    changed = tx.many(
        "UPDATE kanban_tasks SET status = ?, started_at = ?, attempts = attempts + 1, "
        "current_run = ? WHERE id = ? AND status = ?",
        [(RUNNING, tx.now, run_ids[task_id], task_id, READY) for task_id, _ in picks],
    )
    if changed != len(picks):
        raise RuntimeError(f"{len(picks) - changed} of tasks {picks} left ready during a claim")
    taken = []
    for task_id, assignee in picks:
        tx.emit(
            task_id,
            board,
            "claimed",
            run_id=run_ids[task_id],
            host=holder.host,
            pid=holder.pid,
            assignee=assignee,
            expires_at=expires,
        )
        taken.append(
            Run(
                id=run_ids[task_id],
                task_id=task_id,
                host=holder.host,
                pid=holder.pid,
                token=tokens[task_id],
                claimed_at=tx.now,
                claim_expires_at=expires,
                finished_at=None,
                outcome=None,
                error=None,
                latency_ms=None,
                tokens=None,
            )
        )
    return taken


def _holder_row(tx: Tx, run_id: int, token: str | None, *, whole_run: bool = False) -> Row:
    """rows.run_and_task_row for `run_id` once it is known to hold its task (checking
    the token when given); NotHolder otherwise, before anything is written."""
    row = rows.run_and_task_row(tx, run_id, whole_run=whole_run)
    if token is not None and not secrets.compare_digest(row[rows.RUN_TOKEN], token):
        raise NotHolder(f"run {run_id}: wrong run token, not the holder of task {row[0]}")
    status, current = row[rows.TASK_STATUS], row[rows.TASK_CURRENT_RUN]
    if status != RUNNING or current != run_id or row[rows.RUN_OUTCOME] is not None:
        raise NotHolder(
            f"run {run_id} no longer holds task {row[0]} (the task is {status}"
            + (f", run {current} holds it)" if current else ")")
        )
    return row


def _open_run(tx: Tx, run_id: int, token: str | None) -> tuple[Task, Run]:
    """The task (row-locked) whose current run is `run_id`, and the run, as _holder_row
    checks them."""
    row = _holder_row(tx, run_id, token, whole_run=True)
    return rows.task_with_flag(tx, row), run_from_row(row[rows.RUN_OFFSET :])


def _close_run(
    tx: Tx,
    run_id: int,
    outcome: str,
    error: str | None = None,
    latency_ms: int | None = None,
    tokens: int | None = None,
) -> None:
    tx.run(
        "UPDATE kanban_runs SET finished_at = ?, outcome = ?, error = ?, latency_ms = ?, "
        "tokens = ? WHERE id = ?",
        (tx.now, outcome, error, latency_ms, tokens, run_id),
    )


def _metric(value: int | None, what: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise UsageError(f"{what} must be a non-negative integer, not {value!r}")
    return value


def extend(tx: Tx, run: Run, ttl_seconds: float) -> Run:
    """The holder is alive and still working: push the claim's expiry out."""
    _task, stored = _open_run(tx, run.id, run.token)
    tx.run(
        "UPDATE kanban_runs SET claim_expires_at = ? WHERE id = ?",
        (tx.now + max(1.0, float(ttl_seconds)), stored.id),
    )
    return load_run(tx, stored.id)


def complete(tx: Tx, run: Run, result: str, latency_ms: int | None, tokens: int | None) -> Task:
    """running -> done, by the holder of the task's current run (_holder_row checks
    that before anything is written). Read first, then two UPDATEs: an UPDATE ...
    RETURNING that checks as it changes takes one statement less, but SQLite gathers
    RETURNING rows in a temporary b-tree, and two of those cost more than the read."""
    if not isinstance(result, str):
        raise UsageError("a task's result must be text")
    _metric(latency_ms, "latency_ms")
    _metric(tokens, "tokens")
    row = _holder_row(tx, run.id, run.token)
    task_id = int(row[0])
    tx.run(
        "UPDATE kanban_tasks SET status = ?, finished_at = ?, result = ?, "
        "current_run = NULL, consecutive_failures = 0, not_before = NULL WHERE id = ?",
        (DONE, tx.now, result, task_id),
    )
    _close_run(tx, run.id, OUTCOME_COMPLETED, None, latency_ms, tokens)
    tx.emit(task_id, row[1], "completed", run_id=run.id, latency_ms=latency_ms, tokens=tokens)
    done = {
        "status": DONE,
        "finished_at": tx.now,
        "result": result,
        "current_run": None,
        "consecutive_failures": 0,
        "not_before": None,
    }
    return rows.task_with_flag(tx, row, done)


def backoff_delay(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """base x 2^(n-1), capped, then shortened by up to `jitter` of itself."""
    delay = min(
        float(policy.backoff_max_seconds),
        float(policy.backoff_seconds) * 2.0 ** max(0, failures - 1),
    )
    jitter = min(max(float(policy.jitter), 0.0), 1.0)
    return delay * (1.0 - jitter * rng.random())


def fail(
    tx: Tx,
    run_id: int,
    token: str | None,
    error: str,
    policy: RetryPolicy,
    rng: random.Random,
    *,
    kind: str,
    latency_ms: int | None = None,
) -> Task:
    """A counted failure (`failed` from the holder, `timed_out` from a tick): retry as
    todo after a backoff, or give up to blocked past the task's limit."""
    if not isinstance(error, str) or not error.strip():
        raise UsageError("a failure needs an error message")
    _metric(latency_ms, "latency_ms")
    task, stored = _open_run(tx, run_id, token)
    failures = task.consecutive_failures + 1
    if task.max_retries is not None:
        limit = task.max_retries + 1  # the first attempt plus max_retries retries
    else:
        limit = max(1, cap(policy.failure_limit) or 1)
    _close_run(
        tx, stored.id, OUTCOME_FAILED if kind == "failed" else OUTCOME_TIMED_OUT, error, latency_ms
    )
    tx.emit(task.id, task.board, kind, run_id=stored.id, error=error, failures=failures)
    if failures >= limit:
        tx.run(
            "UPDATE kanban_tasks SET status = ?, current_run = NULL, last_error = ?, "
            "consecutive_failures = ?, not_before = NULL WHERE id = ?",
            (BLOCKED, error, failures, task.id),
        )
        # A job's run that gives up is a dead letter (kanban/jobs lists and retries it).
        reason = "dead_letter" if (task.idempotency_key or "").startswith("job:") else "limit"
        tx.emit(
            task.id,
            task.board,
            "gave_up",
            error=error,
            failures=failures,
            limit=limit,
            reason=reason,
        )
    else:
        delay = backoff_delay(policy, failures, rng)
        tx.run(
            "UPDATE kanban_tasks SET status = ?, current_run = NULL, last_error = ?, "
            "consecutive_failures = ?, not_before = ? WHERE id = ?",
            (TODO, error, failures, tx.now + delay, task.id),
        )
        tx.emit(
            task.id,
            task.board,
            "retry_scheduled",
            delay=delay,
            not_before=tx.now + delay,
            failures=failures,
        )
    return load_task(tx, task.id)


def rate_limited(tx: Tx, run: Run, retry_after: float) -> Task:
    """The provider said 429: back to ready after `retry_after`, not a failure."""
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        raise UsageError(f"retry_after must be a number of seconds, not {retry_after!r}")
    delay = max(0.0, float(retry_after))
    task, stored = _open_run(tx, run.id, run.token)
    _close_run(tx, stored.id, OUTCOME_RATE_LIMITED)
    tx.run(
        "UPDATE kanban_tasks SET status = ?, current_run = NULL, not_before = ? WHERE id = ?",
        (READY, tx.now + delay, task.id),
    )
    tx.emit(task.id, task.board, "rate_limited", run_id=stored.id, retry_after=delay)
    return load_task(tx, task.id)


def release(tx: Tx, run_id: int, reason: str) -> Task:
    """The holder is gone: the task goes back to ready, and no failure is counted."""
    task, stored = _open_run(tx, run_id, None)
    _close_run(tx, stored.id, OUTCOME_RECLAIMED, reason or None)
    tx.run("UPDATE kanban_tasks SET status = ?, current_run = NULL WHERE id = ?", (READY, task.id))
    tx.emit(
        task.id,
        task.board,
        "reclaimed",
        run_id=stored.id,
        host=stored.host,
        pid=stored.pid,
        reason=reason,
    )
    return load_task(tx, task.id)


def open_runs(tx: Tx, board: str) -> list[Run]:
    """Every open run on `board`, for a tick's reclaim and timeout checks."""
    rows = tx.all(
        f"SELECT {', '.join('r.' + c.strip() for c in RUN_COLUMNS.split(','))} "
        "FROM kanban_runs r JOIN kanban_tasks t ON t.current_run = r.id "
        "WHERE t.board = ? AND t.status = ? ORDER BY r.id",
        (board, RUNNING),
    )
    return [run_from_row(row) for row in rows]


def runs_of(tx: Tx, task_id: int) -> list[Run]:
    load_task(tx, task_id)
    rows = tx.all(
        f"SELECT {RUN_COLUMNS} FROM kanban_runs WHERE task_id = ? ORDER BY id", (task_id,)
    )
    return [run_from_row(row) for row in rows]


def ready_queue(
    tx: Tx, board: str, with_promotable: bool = False, limit: int | None = None
) -> list[tuple[int, str | None]]:
    """(id, assignee) of every ready task due now, in dispatch order: priority, then age.
    Two columns only: a tick walks this list for 10,000 tasks in a few milliseconds.
    `with_promotable` adds the todo tasks `promote` would make ready now (a dry run
    previews the tick without writing the promotion)."""
    due = "(not_before IS NULL OR not_before <= ?)"
    params: list[object] = [board, tx.now, READY]
    which = "status = ?"
    if with_promotable:
        which = (
            "(status = ? OR (status = ? AND NOT EXISTS (SELECT 1 FROM kanban_task_parents p "
            "JOIN kanban_tasks q ON q.id = p.parent_id "
            "WHERE p.task_id = kanban_tasks.id AND q.status <> ?)))"
        )
        params += [TODO, DONE]
    rows = tx.all(
        f"SELECT id, assignee FROM kanban_tasks WHERE board = ? AND {due} AND {which} "
        "ORDER BY priority DESC, created_at, id" + ("" if limit is None else " LIMIT ?"),
        params if limit is None else [*params, limit],
    )
    return [(int(row[0]), row[1]) for row in rows]


def next_due(tx: Tx, board: str) -> float | None:
    """The earliest future moment a tick has work on `board`: a retry or rate-limit
    time passing, or another holder's claim expiring. None: nothing is scheduled."""
    row = tx.one(
        "SELECT MIN(not_before) FROM kanban_tasks WHERE board = ? AND status IN (?, ?) "
        "AND not_before > ?",
        (board, TODO, READY, tx.now),
    )
    due = None if row is None or row[0] is None else float(row[0])
    row = tx.one(
        "SELECT MIN(r.claim_expires_at) FROM kanban_runs r "
        "JOIN kanban_tasks t ON t.current_run = r.id WHERE t.board = ? AND t.status = ?",
        (board, RUNNING),
    )
    if row is not None and row[0] is not None:
        expiry = float(row[0])
        due = expiry if due is None else min(due, expiry)
    return due
