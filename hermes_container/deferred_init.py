"""A kept library's modules without its package's __init__, until something needs it.

`import uvicorn.server` first runs uvicorn/__init__.py, which re-exports uvicorn's
command line: uvicorn.main, and with it click and multiprocessing. prometheus_client's
__init__ likewise loads its exposition servers (http.server, urllib.request, wsgiref).
A gateway uses none of that, and the two chains cost every gateway 1.7 and 1.2 MB of
its ~22 MB (measured A/B, RssAnon of an idle gateway; bench/bench_memory.py --why).

`defer_init(package)` does what the import system does before it runs a package's
__init__ (find it, make its module with its __path__, put it in sys.modules) and stops
there, so the package's own modules import as usual. The __init__ runs the first time
the package is asked for a name that is neither one of its modules nor one of `names`
(a module __getattr__, PEP 562): code elsewhere in the same process that does
`import uvicorn; uvicorn.run(...)` gets the whole package, as always, with the modules
already imported shared, not loaded twice.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

_lock = threading.RLock()


def defer_init(package: str, **names: str) -> None:
    """Make `package` importable module by module without running its __init__ yet.

    `names` are names the __init__ re-exports that the package's own modules import from
    the package itself (uvicorn.lifespan.off does `from uvicorn import Config`), each
    mapped to the module that defines it. A package already imported is left alone.
    """
    with _lock:
        if package in sys.modules:
            return
        spec = importlib.util.find_spec(package)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            raise ImportError(f"{package} is not an importable package", name=package)
        module = importlib.util.module_from_spec(spec)
        started = False

        def complete(name: str) -> object:
            # Called only for names the module does not have (yet).
            nonlocal started
            if name in names:
                return getattr(importlib.import_module(names[name]), name)
            if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}"):
                return importlib.import_module(f"{package}.{name}")  # `from . import x`
            # Another thread waits here until the __init__ has run, as the import lock
            # would make it; the thread running it (re-entrant lock) sees the module
            # partly initialised, as in any import.
            with _lock:
                if not started:
                    started = True
                    _run_init(module, complete)
            try:
                return module.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

        module.__dict__["__getattr__"] = complete
        sys.modules[package] = module


def _run_init(module: ModuleType, getter: object) -> None:
    spec = module.__spec__
    assert spec is not None and spec.loader is not None  # checked by defer_init
    try:
        spec.loader.exec_module(module)
    finally:
        if module.__dict__.get("__getattr__") is getter:  # not one the __init__ defines
            del module.__dict__["__getattr__"]
