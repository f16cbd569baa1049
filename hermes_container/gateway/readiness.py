"""s6 readiness: one newline on the notification fd once the port accepts connections."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("hermes.gateway")

CONNECT_PROBE_S = 5.0


def listen_socket(host: str, port: int, what: str) -> socket.socket:
    """Bind and listen ourselves (the gateway's and the ingress's port): a clear one-line
    error, and the port is ours at once. `what` names the server in the errors."""
    from hermes_container.errors import EXIT_CONFIG, HermesError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise HermesError(f"cannot resolve {what} host {host!r}: {exc}", EXIT_CONFIG) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise HermesError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def resolve_notify_fd(flag: int | None, environ: Mapping[str, str] | None = None) -> int | None:
    """`--notify-fd`, else $HERMES_NOTIFY_FD; None if unset or not an open descriptor."""
    env = os.environ if environ is None else environ
    fd = flag
    if fd is None:
        raw = env.get("HERMES_NOTIFY_FD", "").strip()
        if not raw:
            return None
        if not raw.isdigit():
            log.warning("ignoring HERMES_NOTIFY_FD=%r: not a file descriptor number", raw)
            return None
        fd = int(raw)
    try:
        os.fstat(fd)
    except OSError:
        log.warning("notification fd %d is not open; readiness will not be signalled", fd)
        return None
    os.set_inheritable(fd, False)
    return fd


def probe_host(bind_host: str) -> str:
    """Where to connect to check our own listener (a wildcard bind answers on loopback)."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def port_accepts(host: str, port: int, timeout_s: float = CONNECT_PROBE_S) -> bool:
    """A blocking connect: the kernel completes it from the listen backlog, so the
    event loop is not needed (and does not get to serve anything meanwhile)."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def signal_ready(fd: int) -> None:
    """Write the newline s6-supervise waits for, then close the fd (it is used once)."""
    try:
        os.write(fd, b"\n")
    except OSError as exc:
        log.warning("could not signal readiness on fd %d: %s", fd, exc.strerror)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
