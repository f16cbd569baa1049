"""Fixtures of the image tier; the machinery lives in harness.py."""

from tests.docker.harness import (
    docker_daemon,
    docker_image,
    pytest_runtest_makereport,
    start_container,
)

__all__ = ["docker_daemon", "docker_image", "pytest_runtest_makereport", "start_container"]
