"""Delivering a run's result: a signed JSON POST to the job's URL, retried with backoff.

The body is JSON (`job`, `slot`, `run_id`, `profile`, `result`, `attempts`); the header
`X-Hermes-Signature-256: sha256=<hex>` is HMAC-SHA256 of the exact body bytes with the
job's secret (shown once at `jobs add`), so the receiver can check both who sent it and
that nothing changed it. A delivery is leased before it is sent (its next time pushed
out), so two dispatchers do not send it at once; one that dies mid-send lets the lease
run out and the POST is sent again: receivers get at least once and should use
`X-Hermes-Delivery` (the run id) to drop repeats. A delivery that keeps failing goes to
its own dead-letter list and never holds up the job's next runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hermes_container.kanban.jobs import book
from hermes_container.kanban.jobs.model import DELIVERY_DEAD, DELIVERY_DONE, DELIVERY_PENDING
from hermes_container.kanban.jobs.schedule import slot_name
from hermes_container.kanban.jobs.settings import JobsSettings
from hermes_container.kanban.tx import Tx

SIGNATURE_HEADER = "X-Hermes-Signature-256"
DELIVERY_HEADER = "X-Hermes-Delivery"
TIMEOUT_SECONDS = 10.0
LEASE_MARGIN_SECONDS = 20.0  # a lease outlasts the POST's timeout by this much
BATCH = 16


@dataclass(frozen=True, slots=True)
class Delivery:
    run_id: int
    job: str
    board: str
    slot: float
    url: str
    secret: str
    body: bytes
    attempt: int  # this attempt's number, from 1


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests): constant-time comparison of the signature."""
    return hmac.compare_digest(sign(secret, body), header)


def payload(run: Any, profile: str | None, result: str, attempts: int) -> bytes:
    return json.dumps(
        {
            "job": run.job,
            "slot": slot_name(run.slot),
            "run_id": run.id,
            "profile": profile,
            "result": result,
            "attempts": attempts,
        },
        sort_keys=True,
    ).encode()


def lease_due(
    tx: Tx, limit: int = BATCH, timeout: float = TIMEOUT_SECONDS, skip: Sequence[int] = ()
) -> list[Delivery]:
    """Deliveries whose time has come (not among `skip`: being sent here), leased to the
    caller for longer than a POST with `timeout` can take."""
    rows = tx.all(
        f"SELECT {book.RUN_COLUMNS} FROM kanban_job_runs WHERE delivery = ? "
        "AND delivery_next_at <= ? ORDER BY delivery_next_at LIMIT ?" + tx.dialect.skip_locked,
        (DELIVERY_PENDING, tx.now, limit + len(skip)),
    )
    out: list[Delivery] = []
    for row in rows:
        run = book.run_from_row(row)
        if run.id in skip or len(out) >= limit:
            continue
        job_row = tx.one("SELECT spec, secret FROM kanban_jobs WHERE name = ?", (run.job,))
        url = None if job_row is None else json.loads(job_row[0]).get("deliver")
        if job_row is None or not url or not job_row[1]:
            # The job was removed or lost its URL: nothing to deliver to, ever.
            _dead(tx, run.id, run.job, run.board, run.slot, run.delivery_attempts, "no URL")
            continue
        tasks = book.run_tasks(tx, [run.id])[run.id]
        last = tasks[-1] if tasks else None
        tx.run(
            "UPDATE kanban_job_runs SET delivery_next_at = ? WHERE id = ?",
            (tx.now + timeout + LEASE_MARGIN_SECONDS, run.id),
        )
        out.append(
            Delivery(
                run_id=run.id,
                job=run.job,
                board=run.board,
                slot=run.slot,
                url=url,
                secret=job_row[1],
                body=payload(
                    run,
                    None if last is None else last.assignee,
                    "" if last is None else (last.result or ""),
                    0 if last is None else last.attempts,
                ),
                attempt=run.delivery_attempts + 1,
            )
        )
    return out


def backoff(attempt: int, rng: random.Random, settings: JobsSettings) -> float:
    delay = min(
        settings.delivery_retry_max_delay_seconds,
        settings.delivery_retry_delay_seconds * 2.0 ** max(0, attempt - 1),
    )
    return delay * (1.0 - 0.1 * rng.random())


def _dead(
    tx: Tx, run_id: int, job: str, board: str, slot: float, attempts: int, error: str
) -> None:
    tx.run(
        "UPDATE kanban_job_runs SET delivery = ?, delivery_next_at = NULL, "
        "delivery_error = ?, delivery_attempts = ? WHERE id = ?",
        (DELIVERY_DEAD, error, attempts, run_id),
    )
    tx.emit_job(
        job,
        board,
        "delivery_dead_lettered",
        run_id=run_id,
        slot=slot,
        attempts=attempts,
        error=error,
    )


def record(
    tx: Tx,
    delivery: Delivery,
    error: str | None,
    status: int | None,
    rng: random.Random,
    settings: JobsSettings,
) -> None:
    """The outcome of one POST (error None: a 2xx answer)."""
    run = book.get_run(tx, delivery.run_id, lock=True)
    if run.delivery != DELIVERY_PENDING:
        return  # retried by hand or finished by another dispatcher meanwhile
    common: dict[str, Any] = {"run_id": run.id, "slot": run.slot, "attempt": delivery.attempt}
    if error is None:
        tx.run(
            "UPDATE kanban_job_runs SET delivery = ?, delivery_attempts = ?, "
            "delivery_next_at = NULL, delivery_error = NULL WHERE id = ?",
            (DELIVERY_DONE, delivery.attempt, run.id),
        )
        tx.emit_job(run.job, run.board, "delivered", status=status, **common)
        return
    if delivery.attempt >= settings.delivery_max_attempts:
        tx.emit_job(run.job, run.board, "delivery_failed", error=error, status=status, **common)
        _dead(tx, run.id, run.job, run.board, run.slot, delivery.attempt, error)
        return
    delay = backoff(delivery.attempt, rng, settings)
    tx.run(
        "UPDATE kanban_job_runs SET delivery_attempts = ?, delivery_next_at = ?, "
        "delivery_error = ? WHERE id = ?",
        (delivery.attempt, tx.now + delay, error, run.id),
    )
    tx.emit_job(
        run.job,
        run.board,
        "delivery_failed",
        error=error,
        status=status,
        retry_in=round(delay, 3),
        **common,
    )


def send(delivery: Delivery, timeout: float = TIMEOUT_SECONDS) -> tuple[str | None, int | None]:
    """POST it; (None, status) on a 2xx answer, else (what went wrong, status or None)."""
    import httpx

    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(delivery.secret, delivery.body),
        DELIVERY_HEADER: str(delivery.run_id),
        "User-Agent": "hermes-container-jobs",
    }
    try:
        # trust_env=False: a proxy from the environment must not see the results.
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            response = client.post(delivery.url, content=delivery.body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__, None
    if 200 <= response.status_code < 300:
        return None, response.status_code
    return f"HTTP {response.status_code}", response.status_code
