"""Image size: the image the Dockerfile builds, beside the pre-trim Dockerfile's image.

Both images are built in this run from the same build context (this checkout's
pyproject.toml, package and root/), the same base image, s6-overlay mirror and wheels:
the baseline is the Dockerfile as it was at BASELINE_REV, the last commit before the
image was trimmed (issue 21), read with `git show`. So the difference is what the
Dockerfile's trimming removes, not a change of dependencies or code. The size is
`docker image inspect -f {{.Size}}` (every layer, uncompressed), in MB of 10^6 bytes
as `docker images` shows it. Target: <= 150 MB.

    python bench/bench_image.py [--baseline-rev REV]

Builds offline like the docker test tier (tests/docker/harness.py: the base image,
../shared/offline's s6-overlay mirror on 127.0.0.1, wheels in .wheels/). Both tags are
removed at the end. Exit 0 when the target is met, 1 when missed, 2 when it could not
build (no daemon, a failed build).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.docker import harness  # noqa: E402  (the repo root is put on sys.path first)

TARGET_MB = 150.0
ISSUE_BASELINE_MB = 168.0  # issue 21's "now", for reference only
BASELINE_REV = "0246cfd"


def build(tag: str, dockerfile: Path, build_args: dict[str, str]) -> float:
    """Build `tag` from `dockerfile` with this checkout as context; its size in MB."""
    cmd = ["build", "--network", "host", "-f", str(dockerfile), "-t", tag]
    for key, value in build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    proc = harness.docker(*cmd, str(REPO), check=False, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"docker build -f {dockerfile.name} failed:\n{tail}")
    size = harness.docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip()
    return int(size) / 1e6


def layers(tag: str) -> list[str]:
    """The image's layers that hold bytes, newest last, as `size  instruction`."""
    out = harness.docker(
        "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", tag
    ).stdout
    rows = []
    for line in reversed(out.splitlines()):
        size, _, created = line.partition("\t")
        if size not in ("0B", "0"):
            instruction = created.replace("/bin/sh -eu -c #(nop) ", "").strip()
            rows.append(f"{size:>8}  {instruction[:90]}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline-rev",
        default=BASELINE_REV,
        help=f"the commit whose Dockerfile builds the baseline (default {BASELINE_REV})",
    )
    args = parser.parse_args()
    reason = harness.unavailable_reason()
    if reason is not None:
        print(f"image size: not measured, {reason}")
        return 2
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{args.baseline_rev}:Dockerfile"],
        capture_output=True,
        text=True,
    )
    if shown.returncode != 0:
        print(f"image size: no Dockerfile at {args.baseline_rev}: {shown.stderr.strip()}")
        return 2
    tags = [f"hermes-container:bench-image-{os.getpid()}-{kind}" for kind in ("base", "trim")]
    try:
        build_args = harness.offline_build_args()
        with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
            baseline_file = Path(tmp) / "Dockerfile.baseline"
            baseline_file.write_text(shown.stdout)
            baseline = build(tags[0], baseline_file, build_args)
        size = build(tags[1], REPO / "Dockerfile", build_args)
        print(f"layers of the image (docker history, {tags[1]}):")
        for row in layers(tags[1]):
            print(f"  {row}")
    # The harness reports a missing component (base image, mirror, wheels) with pytest.fail.
    except (RuntimeError, AssertionError, subprocess.TimeoutExpired, pytest.fail.Exception) as exc:
        print(f"image size: not measured: {exc}")
        return 2
    finally:
        for tag in tags:
            harness.docker("rmi", tag, check=False)
    met = size <= TARGET_MB
    saved = baseline - size
    print(
        f"baseline: the Dockerfile at {args.baseline_rev}, same context and wheels: "
        f"{baseline:.1f} MB (issue 21 measured {ISSUE_BASELINE_MB:.0f} MB before new "
        "dependencies)"
    )
    print(
        f"image size: {size:.1f} MB, {saved:.1f} MB ({saved / baseline:.0%}) below the "
        f"baseline  [target <= {TARGET_MB:.0f} MB: {'met' if met else 'MISSED'}]"
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
