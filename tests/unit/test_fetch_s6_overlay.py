"""docker/fetch-s6-overlay: the four assets, arch mapping, and sha256 verification.

Runs the real script against a throwaway mirror served on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "fetch-s6-overlay"
VERSION = "9.9.9.9"
ASSETS = (
    "s6-overlay-noarch.tar.xz",
    "s6-overlay-x86_64.tar.xz",
    "s6-overlay-aarch64.tar.xz",
    "s6-overlay-symlinks-noarch.tar.xz",
    "s6-overlay-symlinks-arch.tar.xz",
)

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("curl", "sha256sum", "tar", "xz")),
    reason="needs curl, sha256sum, tar and xz",
)


def _tarball(member: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        data = member.encode()
        info = tarfile.TarInfo(f"./marker/{member}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "mirror"
    release = root / f"v{VERSION}"
    release.mkdir(parents=True)
    for asset in ASSETS:
        blob = _tarball(asset)
        (release / asset).write_bytes(blob)
        (release / f"{asset}.sha256").write_text(f"{hashlib.sha256(blob).hexdigest()}  {asset}\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", release
    httpd.shutdown()
    httpd.server_close()


def _run(mirror_url: str, dest: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ["PATH"],
        "S6_OVERLAY_VERSION": VERSION,
        "S6_OVERLAY_MIRROR": mirror_url,
        "TARGETARCH": "amd64",
        **env,
    }
    return subprocess.run(
        ["sh", str(SCRIPT), str(dest)], env=full, capture_output=True, text=True, timeout=60
    )


def test_fetches_verifies_and_unpacks_four_assets(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror
    proc = _run(url, tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    got = sorted(p.name for p in (tmp_path / "root" / "marker").iterdir())
    assert got == sorted(a for a in ASSETS if a != "s6-overlay-aarch64.tar.xz")
    assert proc.stdout.count("ok (") == 4


@pytest.mark.parametrize("arch", ["arm64", "aarch64"])
def test_arm64_maps_to_aarch64(mirror: tuple[str, Path], tmp_path: Path, arch: str) -> None:
    proc = _run(mirror[0], tmp_path / "root", TARGETARCH=arch)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "root" / "marker" / "s6-overlay-aarch64.tar.xz").exists()


def test_unknown_arch_fails_clearly(mirror: tuple[str, Path], tmp_path: Path) -> None:
    proc = _run(mirror[0], tmp_path / "root", TARGETARCH="riscv64")
    assert proc.returncode != 0
    assert "unsupported architecture 'riscv64'" in proc.stderr


def test_published_checksum_mismatch_fails(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, release = mirror
    (release / "s6-overlay-x86_64.tar.xz").write_bytes(_tarball("tampered"))
    proc = _run(url, tmp_path / "root")
    assert proc.returncode != 0
    assert "checksum mismatch for s6-overlay-x86_64.tar.xz" in proc.stderr


def test_pins_win_over_the_mirror(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, release = mirror
    blob = (release / "s6-overlay-noarch.tar.xz").read_bytes()
    (release / "s6-overlay-noarch.tar.xz.sha256").unlink()  # not needed when pinned
    pin = hashlib.sha256(blob).hexdigest().upper()
    proc = _run(url, tmp_path / "ok", S6_OVERLAY_SHA256_NOARCH=pin)
    assert proc.returncode == 0, proc.stderr
    assert "pinned build arg" in proc.stdout

    bad = _run(
        url,
        tmp_path / "bad",
        S6_OVERLAY_SHA256_NOARCH=pin,
        S6_OVERLAY_SHA256_SYMLINKS_ARCH="0" * 64,
    )
    assert bad.returncode != 0
    assert "checksum mismatch for s6-overlay-symlinks-arch.tar.xz" in bad.stderr
    assert "pinned build arg" in bad.stderr


def test_missing_asset_fails(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, release = mirror
    (release / "s6-overlay-symlinks-noarch.tar.xz").unlink()
    proc = _run(url, tmp_path / "root")
    assert proc.returncode != 0
    assert "download of" in proc.stderr and "symlinks-noarch" in proc.stderr
