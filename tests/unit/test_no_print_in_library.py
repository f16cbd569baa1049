"""Only the command layer prints: hermes_container/commands/ and cli.py.

Every other module returns values (or takes a callback, as `supervise(say=...)` does) and
never writes to stdout or stderr itself; logging is fine. This parses each library module
and fails on `print` (called or passed around), on a use of sys.stdout / sys.stderr (or
their __stdout__ / __stderr__ originals) other than as a logging.StreamHandler's stream,
and on os.write to fd 1 or 2.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hermes_container"
COMMAND_LAYER = ("commands", "cli.py")
STREAMS = {"stdout", "stderr", "__stdout__", "__stderr__"}
LOG_HANDLERS = {"StreamHandler"}  # logging may write to a stream: that is the point of it


def library_modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in COMMAND_LAYER
    )


def offences(source: str) -> list[str]:
    """`line: what` for each way `source` writes to stdout/stderr itself."""
    tree = ast.parse(source)
    sys_names = {"sys"}  # names the sys module is bound to (import sys as s)
    os_names = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sys":
                    sys_names.add(alias.asname or "sys")
                elif alias.name == "os":
                    os_names.add(alias.asname or "os")
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name) and node.id == "print" and isinstance(node.ctx, ast.Load):
            found.append(f"{line}: print")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in STREAMS
            and isinstance(node.value, ast.Name)
            and node.value.id in sys_names
            and not _a_log_handlers_stream(node, parents)
        ):
            found.append(f"{line}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            found.extend(
                f"{line}: from sys import {a.name}" for a in node.names if a.name in STREAMS
            )
        elif isinstance(node, ast.ImportFrom) and node.module == "builtins":
            found.extend(
                f"{line}: from builtins import print" for a in node.names if a.name == "print"
            )
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "print"
            and isinstance(node.value, ast.Name)
            and node.value.id == "builtins"
        ):
            found.append(f"{line}: builtins.print")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "write"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in os_names
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in (1, 2)
        ):
            found.append(f"{line}: os.write({node.args[0].value}, ...)")
    return sorted(found, key=lambda text: int(text.split(":")[0]))


def _a_log_handlers_stream(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether `node` (sys.stderr, say) is an argument of logging.StreamHandler(...)."""
    call = parents.get(node)
    if isinstance(call, ast.keyword):
        call = parents.get(call)
    if not isinstance(call, ast.Call) or node is call.func:
        return False
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in LOG_HANDLERS


def test_the_library_is_found() -> None:
    names = {str(p.relative_to(PACKAGE)) for p in library_modules()}
    assert {"healthcheck.py", "volume.py", "supervision/logs.py", "supervision/host.py"} <= names
    assert not any(name.startswith("commands/") or name == "cli.py" for name in names)


@pytest.mark.parametrize(
    "module", library_modules(), ids=lambda path: str(path.relative_to(PACKAGE))
)
def test_library_modules_do_not_print(module: Path) -> None:
    found = offences(module.read_text(encoding="utf-8"))
    assert not found, (
        f"{module.relative_to(PACKAGE.parent)} writes to stdout/stderr itself: {found}; "
        "return the text (or take a callback) and let hermes_container/commands/ print it"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("print('x')", ["1: print"]),
        ("import sys\nprint('x', file=sys.stderr)", ["2: print", "2: sys.stderr"]),
        ("import sys\nsys.stdout.write('x')", ["2: sys.stdout"]),
        ("import sys as s\ns.__stderr__.flush()", ["2: s.__stderr__"]),
        ("from sys import stderr", ["1: from sys import stderr"]),
        ("run(say=print)", ["1: print"]),
        ("import builtins\nbuiltins.print('x')", ["2: builtins.print"]),
        ("import os\nos.write(2, b'x')", ["2: os.write(2, ...)"]),
        ("import sys\njson.dump(x, sys.stdout)", ["2: sys.stdout"]),
        ("import sys\nout = sys.stdout", ["2: sys.stdout"]),
        # Not writing to the process's own streams:
        ("import logging, sys\nlogging.StreamHandler(sys.stderr)", []),
        ("import sys\nStreamHandler(stream=sys.stderr)", []),
        ("import logging\nlogging.getLogger(__name__).warning('x')", []),
        ("fh.write('x')\nimport os\nos.write(fd, b'x')", []),
        ("import subprocess\nsubprocess.run(['x'], stdout=subprocess.DEVNULL)", []),
        ("def f(say):\n    say('x')", []),
    ],
)
def test_offences(source: str, expected: list[str]) -> None:
    assert offences(source) == expected
