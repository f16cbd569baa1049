"""Boards: named queues in one database. `default` always exists and cannot be archived."""

from __future__ import annotations

from hermes_container.errors import UsageError
from hermes_container.kanban.errors import InvalidTransition, NotFound
from hermes_container.kanban.model import DEFAULT_BOARD, Board
from hermes_container.kanban.tx import Row, Tx
from hermes_container.names import is_valid_profile_name


def validate_slug(slug: str) -> str:
    """Boards follow the profile name rule, so a slug is safe in paths and URLs alike."""
    if not isinstance(slug, str) or not is_valid_profile_name(slug):
        raise UsageError(
            f"invalid board name {str(slug)[:40]!r} (expected ^[a-z0-9][a-z0-9_-]{{0,62}}$)"
        )
    return slug


def ensure_default(tx: Tx) -> None:
    tx.run(
        "INSERT INTO kanban_boards (slug, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (DEFAULT_BOARD, tx.now),
    )


def create(tx: Tx, slug: str) -> Board:
    validate_slug(slug)
    # ON CONFLICT rather than a look first: two creators racing on PostgreSQL would both
    # look, and the second would die on the primary key instead of getting this message.
    if not tx.run(
        "INSERT INTO kanban_boards (slug, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (slug, tx.now),
    ):
        raise UsageError(f"board {slug!r} already exists")
    return Board(slug=slug, created_at=tx.now)


def list_all(tx: Tx, *, include_archived: bool = False) -> list[Board]:
    sql = "SELECT slug, created_at, archived_at FROM kanban_boards"
    if not include_archived:
        sql += " WHERE archived_at IS NULL"
    return [
        Board(slug=row[0], created_at=float(row[1]), archived_at=row[2])
        for row in tx.all(sql + " ORDER BY slug")
    ]


def archive(tx: Tx, slug: str) -> Board:
    validate_slug(slug)
    if slug == DEFAULT_BOARD:
        raise UsageError("the default board cannot be archived")
    row = _row(tx, slug, lock=True, allow_archived=True)
    if row[2] is None:
        tx.run("UPDATE kanban_boards SET archived_at = ? WHERE slug = ?", (tx.now, slug))
    return Board(slug=slug, created_at=float(row[1]), archived_at=row[2] or tx.now)


def require(tx: Tx, slug: str, *, lock: bool = False, allow_archived: bool = False) -> None:
    """NotFound unless the board exists; an archived board takes no new work unless
    allowed. `lock` takes the board-row lock that serialises claims on PostgreSQL
    (runs.claim). Returns nothing: it runs in every claim, and no caller there needs
    a Board built."""
    _row(tx, slug, lock=lock, allow_archived=allow_archived)


def _row(tx: Tx, slug: str, *, lock: bool, allow_archived: bool) -> Row:
    validate_slug(slug)
    row = tx.one(
        "SELECT slug, created_at, archived_at FROM kanban_boards WHERE slug = ?"
        + (tx.dialect.board_lock if lock else ""),
        (slug,),
    )
    if row is None:
        raise NotFound(f"no board {slug!r}")
    if row[2] is not None and not allow_archived:
        raise InvalidTransition(f"board {slug!r} is archived")
    return row
