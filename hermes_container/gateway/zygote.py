"""`hermes gateway zygote [--socket PATH]`: one process that has imported the gateway's
modules and forks a gateway for every slot's launcher (commands/gateway_launcher.py); on
in the image (HERMES_GATEWAY_ZYGOTE).

Why: every gateway is its own Python process, and what its imports build (~12.5 MB of
its ~19 MB PSS) is private to it. Forked from one parent that already built it (then
gc.freeze()d so the collector never writes to those pages), 50 gateways share it
copy-on-write (docs/architecture.md, "Gateway zygote").

Rules this module keeps:
- The parent stays single-threaded and opens nothing it would hand down: no thread, no
  event loop, no sqlite connection, no file; it checks before every fork.
- Only a peer of our own uid is served (SO_PEERCRED), and only for `gateway run
  --supervised`; the socket is 0600 in a directory only we can write.
- A child is a gateway run as the launcher's process would have run it: the launcher's
  environment (os.environ replaced whole; no hermes_container module reads it at import),
  cwd, umask and fds 0/1/2 + the notify fd, then cli.main(argv). It leaves its own
  session, so a signal to the zygote's process group never reaches it.
- The parent watches each child through a pidfd and reports its end (code or signal) to
  its launcher; a launcher's connection that closes (the launcher was SIGKILLed) gets
  its gateway SIGKILLed at once, so `s6-svc -k` leaves no gateway behind.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path

from hermes_container.envflags import env_flag
from hermes_container.errors import EXIT_CONFIG, HermesError
from hermes_container.gateway.zygote_wire import (
    MAX_MESSAGE,
    REPLY_EXIT,
    REPLY_PID,
    REPLY_REFUSED,
    REPLY_SIGNAL,
    Request,
    decode_request,
    fds_ancillary,
    fds_received,
    peer_uid,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    # The command layer's: runs the gateway in the prepared child and never returns.
    RunGateway = Callable[[list[str]], object]

log = logging.getLogger("hermes.zygote")

# What a gateway imports before it serves (runner.run_command and _serve_async), so the
# children find it built. A module missing here is only imported privately by each child.
PRELOAD = (
    "hermes_container.cli",
    "hermes_container.commands.gateway",
    "hermes_container.events.actor",
    "hermes_container.events.append",
    "hermes_container.config_changes",
    "hermes_container.gateway.runner",
    "hermes_container.gateway.http_api",
    "hermes_container.gateway.live_settings",
    "hermes_container.gateway.relay",
    "hermes_container.gateway.uvicorn_server",
    "hermes_container.gateway.upstream",
    "hermes_container.metrics.gateway",
    "hermes_container.metrics.writer",
    "hermes_container.metrics.files",
    "hermes_container.gateway.profile_settings",
    "hermes_container.privileges",
    "yaml",
    "prometheus_client",
    "encodings.idna",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.lifespan.on",
    "uvicorn.loops.asyncio",
    "asyncio",
    "sqlite3",
    "ssl",
)
OPTIONAL = (
    "uvloop",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.middleware.wsgi",
    "python_multipart",
)
FD_PARK = 64  # received fds are moved above the targets before they are put in place


class _Stop(Exception):
    """SIGTERM/SIGINT: stop serving."""


def _stop(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    for name in OPTIONAL:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # Whatever __init__ of uvicorn's Config or the deferred imports touch lazily is
    # still imported per child; what is here is the bulk (bench/bench_memory.py).


def _prepare_directory(path: Path) -> None:
    """The socket's directory: ours, and writable by nobody else (created 0700)."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise HermesError(
            f"{directory} must be a directory owned by uid {os.getuid()} that no one else "
            "can write to; not serving a gateway zygote there",
            EXIT_CONFIG,
        )
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a dead zygote's socket (a live one would still answer)


def listen(path: Path) -> socket.socket:
    _prepare_directory(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


class _Child:
    __slots__ = ("conn", "pid", "pidfd")

    def __init__(self, conn: socket.socket | None, pid: int, pidfd: int) -> None:
        self.conn, self.pid, self.pidfd = conn, pid, pidfd


class Zygote:
    def __init__(self, sock: socket.socket, run_gateway: RunGateway) -> None:
        self.sock = sock
        self.run_gateway = run_gateway
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, _Child] = {}  # by pidfd
        self.uid = os.getuid()

    def serve(self, ready_fd: int | None) -> None:
        self.selector.register(self.sock, selectors.EVENT_READ, "accept")
        if ready_fd is not None:
            from hermes_container.gateway.readiness import signal_ready

            signal_ready(ready_fd)
        while True:
            for key, _events in self.selector.select():
                if key.data == "accept":
                    self._accept()
                elif key.data == "conn":
                    self._launcher_spoke(key.fileobj)  # type: ignore[arg-type]
                else:
                    self._child_ended(key.data)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        uid = peer_uid(conn)
        if uid != self.uid:
            log.warning("refused a launcher of uid %d (we serve uid %d only)", uid, self.uid)
            with contextlib.suppress(OSError):
                conn.send(REPLY_REFUSED + b"peer uid differs from the zygote's")
            conn.close()
            return
        self.selector.register(conn, selectors.EVENT_READ, "conn")

    def _child_of(self, conn: socket.socket) -> _Child | None:
        return next((c for c in self.children.values() if c.conn is conn), None)

    def _launcher_spoke(self, conn: socket.socket) -> None:
        child = self._child_of(conn)
        if child is not None:
            # Launchers say nothing after their request: this is their end closing.
            self._launcher_gone(child)
            return
        try:
            data, ancdata, _flags, _addr = conn.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * 8))
        except OSError:
            data, ancdata = b"", []
        fds = fds_received(ancdata)
        try:
            if not data:
                return
            self._fork(conn, data, fds)
        except (ValueError, HermesError) as exc:
            log.warning("refused a request: %s", exc)
            with contextlib.suppress(OSError):
                conn.send(REPLY_REFUSED + str(exc).encode(errors="replace")[:200])
        finally:
            for fd in fds:
                os.close(fd)
            if self._child_of(conn) is None:
                self.selector.unregister(conn)
                conn.close()

    def _launcher_gone(self, child: _Child) -> None:
        log.warning("launcher of gateway pid %d went away; killing the gateway", child.pid)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
        if child.conn is not None:
            self.selector.unregister(child.conn)
            child.conn.close()
            child.conn = None

    def _child_ended(self, child: _Child) -> None:
        _, status = os.waitpid(child.pid, 0)
        self.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        del self.children[child.pidfd]
        code = os.waitstatus_to_exitcode(status)
        if child.conn is None:
            return
        reply = REPLY_SIGNAL + b"%d" % -code if code < 0 else REPLY_EXIT + b"%d" % code
        with contextlib.suppress(OSError):
            child.conn.send(reply)
        self.selector.unregister(child.conn)
        child.conn.close()

    def _fork(self, conn: socket.socket, data: bytes, fds: list[int]) -> None:
        request = decode_request(data)
        if len(request.targets) != len(fds):
            raise ValueError("the fds sent do not match the fds named")
        if not _is_supervised_run(request.argv):
            raise ValueError("only `hermes ... gateway run --supervised` is forked here")
        if threading.active_count() != 1:  # fork with threads is undefined behaviour
            raise HermesError("the zygote has threads; it cannot fork safely")
        # Nothing is buffered to hand down: the zygote writes only through its log
        # handler, which flushes every record.
        pid = os.fork()
        if pid == 0:
            self._become_gateway(conn, request, fds)  # never returns
        pidfd = os.pidfd_open(pid)
        child = _Child(conn, pid, pidfd)
        self.children[pidfd] = child
        self.selector.register(pidfd, selectors.EVENT_READ, child)
        try:
            conn.sendmsg([REPLY_PID + b"%d" % pid], fds_ancillary([pidfd]))
        except OSError:
            self._launcher_gone(child)

    def _become_gateway(self, conn: socket.socket, request: Request, fds: list[int]) -> None:
        """In the child: the launcher's process as it was, then the gateway; the
        callback ends the process (it never returns into the zygote's loop)."""
        try:
            # The objects first (their later garbage collection must not close a
            # number that _place_fds gave to something else), then every fd.
            self.selector.close()
            for sock in (self.sock, conn, *(c.conn for c in self.children.values() if c.conn)):
                sock.detach()
            log.handlers.clear()
            os.setsid()
            _reset_signals()
            _place_fds(fds, request.targets)
            os.umask(request.umask)
            os.chdir(request.cwd)
            os.environ.clear()
            os.environ.update(request.env)
            time.tzset()  # TZ is the launcher's now
        except BaseException:
            os._exit(111)  # a half-made child must not serve nor return to the loop
        self.run_gateway(request.argv)
        os._exit(1)  # not reached


def _is_supervised_run(argv: list[str]) -> bool:
    from hermes_container.cli import run_args

    args = run_args(argv[1:])
    return args is not None and bool(args.supervised)


def _reset_signals() -> None:
    """A freshly exec'd gateway's dispositions: HUP ignored (the slot's `trap '' HUP`
    until the gateway installs its own), INT Python's, the rest default."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _place_fds(fds: list[int], targets: list[int]) -> None:
    """Make fds[i] the descriptor numbered targets[i], whatever numbers they arrived as,
    and close every other descriptor above 2: nothing of the zygote's stays open in a
    gateway (another launcher's connection held here would not close when the zygote
    dies, and that launcher would never notice)."""
    import fcntl

    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FD_PARK) for fd in fds]
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in parked:
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone
                os.close(fd)
    for fd, target in zip(parked, targets, strict=True):
        os.dup2(fd, target, inheritable=target <= 2)
    for fd in parked:
        os.close(fd)


def refuse_root() -> None:
    if os.geteuid() == 0 and not env_flag("HERMES_ALLOW_ROOT_GATEWAY"):
        raise HermesError(
            "refusing to run the gateway zygote as root: its gateways would run as root; "
            "run it as the owner of HERMES_HOME or set HERMES_ALLOW_ROOT_GATEWAY=1",
            EXIT_CONFIG,
        )


def drop_denied_environment(keep_fd: int | None) -> None:
    """Re-exec without what no gateway may carry (gateway/environment.py): a forked
    gateway replaces os.environ, but its /proc/PID/environ is the zygote's exec-time
    block, so that block must already be one a gateway is allowed to hold."""
    from hermes_container.gateway.environment import filtered

    allowed = filtered(os.environ)  # a typo in the deny list stops us, as it parks a gateway
    if len(allowed) != len(os.environ):
        if keep_fd is not None:
            os.set_inheritable(keep_fd, True)  # the readiness fd, for the next us
        argv = [sys.executable, *sys.orig_argv[1:]]
        os.execve(sys.executable, argv, allowed)  # noqa: S606  (ourselves again)


def run_zygote(path: Path, ready_fd: int | None, run_gateway: RunGateway) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. `run_gateway(argv)` runs in
    each forked child, its process prepared as the launcher's was, and ends it."""
    refuse_root()
    drop_denied_environment(ready_fd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hermes-gateway-zygote: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    preload()
    sock = listen(path)
    bound = os.stat(path)
    gc.collect()
    gc.freeze()  # what the imports built stays shared: the collector never touches it
    log.info("serving on %s (pid %d)", path, os.getpid())
    try:
        Zygote(sock, run_gateway).serve(ready_fd)
    except _Stop as stop:
        log.info("stopping (%s); launchers kill their gateways and s6 restarts them", stop)
    finally:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(path), bound):  # not a successor's socket
                os.unlink(path)
        sock.close()
    return 0
