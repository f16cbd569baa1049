"""The gateway zygote's wire format, shared by the zygote (zygote.py) and the launcher
(commands/gateway_launcher.py), and where the zygote's socket is.

One SOCK_SEQPACKET message per request, launcher -> zygote: NUL-separated fields (see
encode_request) with the fds passed alongside (SCM_RIGHTS). Replies, zygote -> launcher:
`P<pid>` with a pidfd attached, then `X<exit code>` or `S<signal>`; `E<reason>` refuses.

Imports only C modules and os: the launcher loads this file by path in a bare
interpreter (-I -S), where hermes_container itself is not importable.
"""

from __future__ import annotations

import _socket
import _struct
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ENV_VAR = "HERMES_GATEWAY_ZYGOTE"
DEFAULT_SOCKET = "run/gateway-zygote.sock"  # under HERMES_HOME, when the switch is just on
MAGIC = b"hermes-zygote-1"
MAX_MESSAGE = 1 << 20  # argv + environment; larger ones run in-process
FD_OPTION = "--zygote-fd"

# Replies from the zygote: pid (with the pidfd attached), exit code, signal, refusal.
REPLY_PID, REPLY_EXIT, REPLY_SIGNAL, REPLY_REFUSED = b"P", b"X", b"S", b"E"


# -- the wire format (both sides) ---------------------------------------------------------


def encode_request(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, umask: int, targets: Sequence[int]
) -> bytes:
    """NUL-separated: magic, cwd, umask, the fd numbers the passed fds become, argc,
    argv, then KEY=VALUE for the environment (os.environb has no NULs by construction)."""
    fields = [
        MAGIC,
        os.fsencode(cwd),
        b"%o" % umask,
        b",".join(b"%d" % fd for fd in targets),
        b"%d" % len(argv),
        *(os.fsencode(a) for a in argv),
        *(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()),
    ]
    return b"\0".join(fields)


class Request:
    __slots__ = ("argv", "cwd", "env", "targets", "umask")

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: str, umask: int, targets: list[int]
    ) -> None:
        self.argv, self.env, self.cwd, self.umask, self.targets = argv, env, cwd, umask, targets


def decode_request(data: bytes) -> Request:
    """The inverse of encode_request; ValueError for anything malformed."""
    fields = data.split(b"\0")
    if len(fields) < 5 or fields[0] != MAGIC:
        raise ValueError("not a hermes zygote request")
    cwd, umask, targets, argc = fields[1:5]
    count = int(argc)
    if count < 1 or len(fields) < 5 + count:
        raise ValueError("bad argument count")
    argv = [os.fsdecode(a) for a in fields[5 : 5 + count]]
    env: dict[str, str] = {}
    for entry in fields[5 + count :]:
        key, sep, value = entry.partition(b"=")
        if not sep or not key:
            raise ValueError("bad environment entry")
        env[os.fsdecode(key)] = os.fsdecode(value)
    fds = [int(t) for t in targets.split(b",")] if targets else []
    return Request(argv, env, os.fsdecode(cwd), int(umask, 8), fds)


def fds_ancillary(fds: Sequence[int]) -> list[tuple[int, int, bytes]]:
    if not fds:
        return []
    packed = _struct.pack(f"{len(fds)}i", *fds)
    return [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)]


def fds_received(ancdata: Sequence[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(_struct.unpack(f"{usable // 4}i", data[:usable]))
    return fds


def peer_uid(sock: _socket.socket) -> int:
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    _pid, uid, _gid = _struct.unpack("3i", creds)
    return int(uid)


def socket_path(env: Mapping[str, str]) -> str | None:
    """The zygote's socket HERMES_GATEWAY_ZYGOTE names: an absolute path, or 1/true/yes
    for <HERMES_HOME>/run/gateway-zygote.sock; None when the switch is off (unset, 0, ...)."""
    value = env.get(ENV_VAR, "").strip()
    if value.startswith("/"):
        return value
    if value.lower() not in ("1", "true", "yes"):  # envflags' rule: a typo never enables
        return None
    home = env.get("HERMES_HOME", "").strip()
    if not home:
        home = os.path.join(os.path.expanduser("~"), ".hermes")
    return os.path.join(os.path.abspath(home), DEFAULT_SOCKET)
