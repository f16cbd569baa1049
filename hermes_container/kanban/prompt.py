"""What a task says to its assignee: one user message built from the board.

The title and body, then the results of the tasks it depends on (a pipeline hands its
output down this way), then the comments in order. The persona is not here: the
gateway puts the profile's SOUL.md first, as for any client.
"""

from __future__ import annotations

from typing import Any

from hermes_container.kanban.model import Task
from hermes_container.kanban.store import Store

# A parent's result or a comment longer than this is cut, so one huge answer upstream
# cannot push a task's request past the gateway's body limit.
MAX_PIECE_CHARS = 32_000


def _cut(text: str) -> str:
    if len(text) <= MAX_PIECE_CHARS:
        return text
    return text[:MAX_PIECE_CHARS] + f"\n[... {len(text) - MAX_PIECE_CHARS} characters cut]"


def task_text(task: Task, parents: list[Task], comments: list[tuple[str | None, str]]) -> str:
    parts = [f"Task #{task.id}: {task.title}"]
    if task.body.strip():
        parts.append(task.body.strip())
    if parents:
        parts.append("Results of the tasks this one depends on:")
        for parent in parents:
            parts.append(f"--- #{parent.id} {parent.title} ---\n{_cut(parent.result or '')}")
    if comments:
        parts.append("Comments:")
        for author, text in comments:
            parts.append(f"- {author or 'someone'}: {_cut(text)}")
    return "\n\n".join(parts)


def messages_for(store: Store, task: Task) -> list[dict[str, Any]]:
    parents = [store.get_task(pid) for pid in task.parents]
    comments: list[tuple[str | None, str]] = []
    after = 0
    while True:  # every event of the task, a page at a time
        page = store.events_since(after, task_id=task.id, limit=1000)
        comments.extend(
            (e.data.get("author"), str(e.data.get("text", "")))
            for e in page
            if e.kind == "commented"
        )
        if len(page) < 1000:
            break
        after = page[-1].id
    return [{"role": "user", "content": task_text(task, parents, comments)}]
