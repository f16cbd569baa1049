"""The thin side of the gateway zygote (gateway/zygote.py): a slot's `gateway run --supervised`
handed over to a gateway forked from the zygote, and waited for.

Two halves live here:

- `hand_off(argv)` runs inside the ordinary `hermes ... gateway run --supervised` process
  (commands/gateway.py `_run`): when HERMES_GATEWAY_ZYGOTE names a zygote that answers
  and runs as our own uid, it execs a bare interpreter (`python -I -S`) that imports this
  file and zygote_wire.py alone, with the connected socket; otherwise it returns and the
  gateway runs in-process, as it always did. The exec drops everything the CLI
  imported: what stays for the life of the gateway is a bare interpreter plus
  `_socket`, `_signal` and `_struct` (the C modules only; `socket` and `signal` import
  enum and selectors, ~1 MB more each launcher, measured with RssAnon).
- `main()` is that launcher. It sends the zygote its argv, environment, cwd, umask and
  its fds 0, 1, 2 and the notify fd (SCM_RIGHTS), gets back the gateway's pid and a
  pidfd, forwards TERM, INT, HUP, QUIT, USR1 and USR2 to it, and ends the way the
  gateway ended: the same exit code, or the same signal (re-raised on itself with the
  default action), so s6-supervise and the slot's finish script see what they always saw.
  If the zygote goes away, the gateway is SIGKILLed through the pidfd and we exit 111
  (s6 restarts the slot; a launcher finding no zygote runs the gateway in-process).
  If we are SIGKILLed ourselves (`s6-svc -k`), the zygote sees our end close and
  SIGKILLs the gateway at once.

The script imports nothing from the hermes_container package (it runs without
site-packages): zygote_wire.py, beside zygote.py, is found by path. It lives in the
command layer because it is a program: its few lines go to its own stderr, the slot's
log. `run_forked_gateway` is the other program here: what a forked child runs.
"""

from __future__ import annotations

import os
import sys

try:
    from hermes_container.gateway import zygote_wire as wire
except ImportError:  # the bare launcher (-I -S): launcher_argv put its directory on the path
    import zygote_wire as wire  # type: ignore[import-not-found,no-redef]

import _socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
EXIT_ZYGOTE_LOST = 111  # s6's "temporary failure": the slot restarts
# Set in a gateway forked by the zygote: it must run in-process, never hand off again.
IN_ZYGOTE_CHILD = False


# -- in the CLI process: hand over, or return --------------------------------------------


def hand_off(argv: Sequence[str]) -> None:
    """Exec the launcher when a zygote of our own uid answers; return otherwise."""
    if IN_ZYGOTE_CHILD:
        return
    path = wire.socket_path(os.environ)
    if path is None:
        return
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
        if wire.peer_uid(sock) != os.getuid():
            raise OSError(f"the zygote at {path} runs as another user")
    except OSError as exc:
        sock.close()
        import logging

        logging.getLogger("hermes.gateway").warning(
            "gateway zygote %s not usable (%s); running the gateway in-process", path, exc
        )
        return
    fd = sock.detach()
    os.set_inheritable(fd, True)
    os.execv(sys.executable, launcher_argv(fd, argv))  # noqa: S606  (ourselves, no shell)


def launcher_argv(fd: int, argv: Sequence[str]) -> list[str]:
    """A bare interpreter (-I -S) that imports this file as the top-level module
    `launcher`, from its bytecode: run as a script, it would be compiled from source
    every time, and the compiler's arenas stay in the process (+1.1 MB RssAnon against
    +0.16 MB from the .pyc, measured). -I drops PYTHON* variables, so the bytecode
    settings the CLI ran with are passed on as options."""
    here = os.path.dirname(os.path.abspath(__file__))
    gateway = os.path.dirname(os.path.abspath(wire.__file__))
    options = ["-I", "-S"]
    if sys.dont_write_bytecode:
        options.append("-B")
    if sys.pycache_prefix:
        options += ["-X", f"pycache_prefix={sys.pycache_prefix}"]
    # Appended, not prepended: the stdlib wins over this directory's modules.
    bootstrap = (
        f"import sys; sys.path += [{here!r}, {gateway!r}]; "
        "import gateway_launcher; gateway_launcher.script()"
    )
    return [sys.executable, *options, "-c", bootstrap, wire.FD_OPTION, str(fd), *argv]


# -- in a gateway forked by the zygote ----------------------------------------------------


def run_forked_gateway(argv: list[str]) -> None:
    """The zygote's child, its fds, cwd, umask and environment already the launcher's
    (gateway/zygote.py): run `gateway run` through the CLI as that process would have,
    then end like an interpreter (atexit handlers, stdio), never returning."""
    global IN_ZYGOTE_CHILD
    code = 1
    try:
        import io

        if os.environ.get("PYTHONUNBUFFERED") and isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(write_through=True)
        IN_ZYGOTE_CHILD = True
        sys.argv = list(argv)
        from hermes_container.cli import main as cli_main

        code = cli_main(argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import atexit
        import contextlib

        # As an interpreter's exit would: atexit handlers (the ledger's, logging's).
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# -- the launcher script -------------------------------------------------------------------


def _notify_fd(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """The readiness fd as `gateway run` will resolve it (flag, else HERMES_NOTIFY_FD)."""
    raw = env.get("HERMES_NOTIFY_FD", "").strip()
    for i, word in enumerate(argv):
        if word == "--notify-fd" and i + 1 < len(argv):
            raw = argv[i + 1]
        elif word.startswith("--notify-fd="):
            raw = word.removeprefix("--notify-fd=")
    if not raw.isdigit():
        return None
    try:
        os.fstat(int(raw))
    except OSError:
        return None
    return int(raw)


def _fall_back(argv: Sequence[str], why: str) -> None:
    """Run the gateway in-process after all (the zygote refused us before forking)."""
    os.write(2, f"hermes: gateway zygote: {why}; running the gateway in-process\n".encode())
    env = dict(os.environ)
    env[wire.ENV_VAR] = "0"  # this process must not try the zygote again
    python = sys.executable
    os.execve(python, [python, "-m", "hermes_container", *argv[1:]], env)  # noqa: S606


class _Launcher:
    def __init__(self, sock: _socket.socket) -> None:
        import _signal  # type: ignore[import-not-found]  # no stub: the C half of `signal`

        self.signal_mod = _signal
        self.sock = sock
        self.pidfd: int | None = None
        self.pending: list[int] = []

    def forward(self, signum: int, frame: object) -> None:
        if self.pidfd is None:
            self.pending.append(signum)
            return
        try:  # noqa: SIM105  (contextlib would cost the launcher its imports)
            self.signal_mod.pidfd_send_signal(self.pidfd, signum)
        except ProcessLookupError:
            pass

    def install(self) -> None:
        for name in FORWARDED:
            self.signal_mod.signal(getattr(self.signal_mod, name), self.forward)

    def kill_gateway(self) -> None:
        if self.pidfd is not None:
            try:  # noqa: SIM105  (as above)
                self.signal_mod.pidfd_send_signal(self.pidfd, self.signal_mod.SIGKILL)
            except ProcessLookupError:
                pass

    def receive(self) -> tuple[bytes, list[int]]:
        data, ancdata, _flags, _addr = self.sock.recvmsg(256, _socket.CMSG_SPACE(16))
        return data, wire.fds_received(ancdata)

    def die_like(self, signum: int) -> None:
        """End by `signum` with its default action, as the gateway did."""
        sig = self.signal_mod
        if signum not in (sig.SIGKILL, sig.SIGSTOP):  # those two have no handler to reset
            sig.signal(signum, sig.SIG_DFL)
        sig.pthread_sigmask(sig.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # a signal whose default is to ignore or stop (not expected)

    def run(self, argv: list[str]) -> int:
        self.install()
        notify = _notify_fd(argv, os.environ)
        fds = [0, 1, 2] + ([notify] if notify is not None and notify > 2 else [])
        umask = os.umask(0o077)
        os.umask(umask)
        message = wire.encode_request(argv, os.environ, os.getcwd(), umask, fds)
        if len(message) > wire.MAX_MESSAGE:
            _fall_back(argv, "the environment is too large to hand over")
        try:
            self.sock.sendmsg([message], wire.fds_ancillary(fds))
            data, got = self.receive()
        except OSError as exc:
            _fall_back(argv, f"hand-over failed ({exc.strerror or exc})")
            raise  # not reached: _fall_back execs
        if data[:1] == wire.REPLY_REFUSED or not data:
            for fd in got:
                os.close(fd)
            _fall_back(argv, data[1:].decode(errors="replace") or "it closed the connection")
        if data[:1] != wire.REPLY_PID or len(got) != 1:
            _fall_back(argv, "unexpected reply")
        self.pidfd = got[0]
        if notify is not None and notify > 2:
            os.close(notify)  # the gateway holds it now: its newline is the readiness
        for signum in self.pending:
            self.forward(signum, None)
        self.pending.clear()
        while True:
            try:
                data, got = self.receive()
            except OSError:
                data = b""
            for fd in got:
                os.close(fd)
            if data[:1] == wire.REPLY_EXIT:
                return int(data[1:])
            if data[:1] == wire.REPLY_SIGNAL:
                self.die_like(int(data[1:]))
            # The zygote is gone (or spoke nonsense): no gateway may outlive this slot.
            self.kill_gateway()
            os.write(2, b"hermes: gateway zygote went away; the gateway was killed\n")
            return EXIT_ZYGOTE_LOST


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != wire.FD_OPTION or not argv[1].isdigit():
        os.write(2, b"usage: launcher.py --zygote-fd FD HERMES-ARGV...\n")
        return 2
    fd = int(argv[1])
    os.set_inheritable(fd, False)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
    return _Launcher(sock).run(argv[2:])


def script() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    script()
