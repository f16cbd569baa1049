"""File stamps for caches that must see every change without re-reading every time.

A stamp is (inode, size, mtime_ns): an atomic rename changes the inode, an edit in place
the size or mtime. mtimes are as coarse as the kernel's clock tick, so two changes
within one tick can share a stamp; a cache therefore trusts a stamp only once it is
older than RACY_S when it was taken (git's "racily clean" rule) and re-reads until then.
"""

from __future__ import annotations

import os
import time

RACY_S = 0.05

Stamp = tuple[int, int, int]


def stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def settled(value: Stamp | None) -> bool:
    """Whether a stamp is old enough that no later change can share it."""
    return value is None or time.time_ns() - value[2] > RACY_S * 1e9
