"""Becoming the owner of $HERMES_HOME before a root process touches it.

The home is writable by its owner (uid 10000 in the image), so every path below it is
one that user can change: a symlink planted at `logs/gateways`, a directory swapped
under a running command. A root process that creates or chowns files there can be
steered anywhere. So root never works in a home it does not own: it takes the owner's
uid, gid and groups first, and then the kernel's own permission checks apply.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def drop_to_home_owner(root: Path) -> tuple[int, int] | None:
    """As root over a home someone else owns: become that owner. Returns (uid, gid)
    when it dropped; None when not root, or the home is missing or root's own."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return None  # a home root creates is root's: the gateways then refuse root
    if st.st_uid == 0:
        return None
    import pwd

    try:
        os.initgroups(pwd.getpwuid(st.st_uid).pw_name, st.st_gid)
    except KeyError:  # an owner without a passwd entry (e.g. a bind-mounted volume)
        os.setgroups([])
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)
    # What the slots and the exec shim give the owner: root's HOME is not theirs to read.
    os.environ["HOME"] = str(root)
    return st.st_uid, st.st_gid
