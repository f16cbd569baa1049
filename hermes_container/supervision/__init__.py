"""Supervision of gateway slots; `get_manager` picks the backend for this tree.

Stable API (used by the CLI and the dashboard):

    manager = get_manager(home)          # None outside a live supervised tree
    manager.start(profile, wait=15.0)    # -> ServiceStatus (desired state written first)
    manager.stop(profile, wait=15.0)
    manager.restart(profile, wait=15.0)
    manager.status(profile)
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from hermes_container.home import HermesHome
    from hermes_container.supervision.s6 import S6Manager


def live_scandir(home: HermesHome) -> Path | None:
    """The scandir when a live s6-svscan runs on it, else None.

    The scandir is HERMES_S6_SCANDIR (the image: /run/hermes/service), else
    $HERMES_HOME/run/service (where `hermes supervise` runs its tree).
    """
    from hermes_container.supervision.scandir import resolve_scandir, svscan_alive

    scandir = resolve_scandir(home)
    if not scandir.is_dir() or not svscan_alive(scandir):
        return None
    return scandir


def get_manager(home: HermesHome) -> S6Manager | None:
    """The s6 manager when a live s6-svscan runs on the scandir, else None."""
    scandir = live_scandir(home)
    if scandir is None:
        return None
    from hermes_container.supervision.s6 import S6Manager

    return S6Manager(home, scandir)
