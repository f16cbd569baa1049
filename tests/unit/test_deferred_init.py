"""deferred_init: a kept library's modules without its package __init__, until needed.

Each case runs in a fresh interpreter: what matters is which modules get imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_gateway_server_loads_no_uvicorn_command_line() -> None:
    out = run_python(
        "import sys\n"
        "import hermes_container.gateway.uvicorn_server as s\n"
        "unused = ('click', 'uvicorn.main', 'multiprocessing', 'uvicorn.supervisors')\n"
        "print(sorted(m for m in unused if m in sys.modules))\n"
        "print(s.GatewayServer.__mro__[1].__module__)\n"
    )
    assert out.splitlines() == ["[]", "uvicorn.server"]


def test_uvicorn_is_whole_for_code_that_asks_for_it() -> None:
    """After the gateway's deferred import, `import uvicorn` elsewhere gets everything,
    and the classes are the very ones already loaded (no module imported twice)."""
    out = run_python(
        "import sys\n"
        "from hermes_container.gateway.uvicorn_server import GatewayServer\n"
        "import uvicorn, uvicorn.config, uvicorn.server\n"
        "print(uvicorn.Config is uvicorn.config.Config, 'uvicorn.main' in sys.modules)\n"
        "print(uvicorn.Server is uvicorn.server.Server, callable(uvicorn.run))\n"
        "print('uvicorn.main' in sys.modules, bool(uvicorn.__version__))\n"
        "from uvicorn import run\n"
        "print(run.__module__, GatewayServer.__mro__[1] is uvicorn.Server)\n"
    )
    # Config is named to defer_init (uvicorn.lifespan.off imports it from the package):
    # asking for it runs no __init__; asking for Server does.
    assert out.splitlines() == [
        "True False",
        "True True",
        "True True",
        "uvicorn.main True",
    ]


def test_a_gateway_serves_with_uvicorn_deferred() -> None:
    """A real server on the deferred package: Config.load imports the protocol, the
    lifespan (`from uvicorn import Config`) and serves a request, still without uvicorn.main."""
    out = run_python(
        "import asyncio, socket, sys\n"
        "from hermes_container.deferred_init import defer_init\n"
        "defer_init('uvicorn', Config='uvicorn.config')\n"
        "from uvicorn.config import Config\n"
        "from uvicorn.server import Server\n"
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n"
        "async def main():\n"
        "    sock = socket.socket(); sock.bind(('127.0.0.1', 0)); sock.listen()\n"
        "    port = sock.getsockname()[1]\n"
        "    server = Server(Config(app, lifespan='off', http='httptools', ws='none',"
        " log_config=None))\n"
        "    task = asyncio.create_task(server.serve(sockets=[sock]))\n"
        "    while not server.started: await asyncio.sleep(0.01)\n"
        "    r, w = await asyncio.open_connection('127.0.0.1', port)\n"
        "    w.write(b'GET / HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n')\n"
        "    reply = await r.read()\n"
        "    server.should_exit = True; await task\n"
        "    return reply\n"
        "reply = asyncio.run(main())\n"
        "print(reply.split(b'\\r\\n')[0].decode(), b'ok' in reply.split(b'\\r\\n\\r\\n', 1)[1])\n"
        "print('uvicorn.main' in sys.modules, 'click' in sys.modules)\n"
    )
    assert out.splitlines() == ["HTTP/1.1 200 OK True", "False False"]


def test_metrics_library_without_its_exposition_servers() -> None:
    out = run_python(
        "import sys\n"
        "from hermes_container.metrics import files\n"
        "c = files.library('metrics').Counter('x', 'help', registry=None)\n"
        "files.library('multiprocess'); files.library('values'); files.library('mmap_dict')\n"
        "print(sorted(m for m in ('prometheus_client.exposition', 'http.server', 'wsgiref',"
        " 'urllib.request') if m in sys.modules))\n"
        "import prometheus_client\n"
        "print(prometheus_client.Counter is type(c), callable(prometheus_client.generate_latest))\n"
        "from prometheus_client import CollectorRegistry\n"
        "from prometheus_client.core import GaugeMetricFamily\n"
        "print('prometheus_client.exposition' in sys.modules)\n"
    )
    assert out.splitlines() == ["[]", "True True", "True"]


def test_an_imported_package_is_left_alone() -> None:
    out = run_python(
        "import sys, json\n"
        "from hermes_container.deferred_init import defer_init\n"
        "before = sys.modules['json']\n"
        "defer_init('json')\n"
        "print(sys.modules['json'] is before, '__getattr__' in vars(before))\n"
    )
    assert out.split() == ["True", "False"]


@pytest.mark.parametrize("name", ["no_such_package_here", "hermes_container.cli"])
def test_only_packages_can_be_deferred(name: str) -> None:
    out = run_python(
        "import sys\n"
        "from hermes_container.deferred_init import defer_init\n"
        "try:\n"
        f"    defer_init({name!r})\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
        f"print({name!r} in sys.modules)\n"
    )
    assert out.splitlines() == [f"refused: {name} is not an importable package", "False"]


def test_deferred_package_semantics(tmp_path: Path) -> None:
    """On a package of our own: modules import without the __init__; a named re-export
    comes from its module; anything else runs the __init__ once, and a second thread
    asking meanwhile waits for it instead of seeing a half-made package; an __init__'s
    own module __getattr__ is kept."""
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (tmp_path / "coordination.py").write_text(
        "import threading\nstarted, release = threading.Event(), threading.Event()\nruns = []\n"
    )
    (pkg / "__init__.py").write_text(
        "import coordination\n"
        "coordination.runs.append(1)\n"
        "coordination.started.set()\n"
        "coordination.release.wait(10)\n"
        "from lazypkg.leaf import Thing\n"
        "VALUE = 42\n"
        "def __getattr__(name):\n"
        "    if name == 'DYNAMIC':\n"
        "        return 'made by the package'\n"
        "    raise AttributeError(name)\n"
    )
    (pkg / "leaf.py").write_text("class Thing:\n    pass\n")
    (pkg / "other.py").write_text("from lazypkg import Thing\nfrom . import leaf\n")
    code = (
        "import sys, threading, time, coordination\n"
        "from hermes_container.deferred_init import defer_init\n"
        "defer_init('lazypkg', Thing='lazypkg.leaf')\n"
        "import lazypkg.other\n"
        "print(coordination.runs, lazypkg.other.Thing is lazypkg.leaf.Thing)\n"
        "seen = {}\n"
        "def ask(who):\n"
        "    try:\n"
        "        seen[who] = lazypkg.VALUE\n"
        "    except AttributeError as exc:\n"
        "        seen[who] = f'AttributeError: {exc}'\n"
        "a = threading.Thread(target=ask, args=('a',)); a.start()\n"
        "coordination.started.wait(10)\n"
        "b = threading.Thread(target=ask, args=('b',)); b.start()\n"
        "time.sleep(0.2)  # b asks while a runs the __init__\n"
        "coordination.release.set(); a.join(); b.join()\n"
        "print(coordination.runs, seen['a'], seen['b'])\n"
        "print(lazypkg.DYNAMIC, hasattr(lazypkg, 'missing'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "[] True",
        "[1] 42 42",
        "made by the package False",
    ]
