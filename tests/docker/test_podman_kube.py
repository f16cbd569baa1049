"""`podman kube play` runs the pod that deploy/kubernetes/base renders, with its security
context as written (read-only root, every capability dropped but the six the image
needs, no privilege escalation, seccomp RuntimeDefault), and a profile answers through
the ingress.

What is changed for a single machine, and why:
  - the StatefulSet becomes its pod template (podman plays Pods, not StatefulSets) and
    its volume claim template a PersistentVolumeClaim (a podman volume);
  - host network, every port a free one and every server on 127.0.0.1 (nothing leaves
    loopback; 8640/8642/9119 may be taken), so the container ports are dropped;
  - the Secret and a ConfigMap of declarative profiles (as overlays/shared-board mounts
    one) are made here: the default profile's provider is a fake one on loopback, its key
    a file of the Secret;
  - podman's default rlimits (nofile 1048576) are above what this sandbox allows, so
    CONTAINERS_CONF lowers them.

Needs podman and catatonit (Debian packages; the pod's pause image is built from
catatonit) besides docker: skipped without them, unless HERMES_REQUIRE_PODMAN=1 (CI).
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docker.harness import free_port_range, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.test_kubernetes_manifests import IMAGE_CAPABILITIES, container, only, render

CAPABILITY_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7}


def _require_podman() -> None:
    missing = [tool for tool in ("podman", "catatonit") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not found (Debian packages podman, catatonit)"
    if os.environ.get("HERMES_REQUIRE_PODMAN") == "1":
        pytest.fail(reason + "; HERMES_REQUIRE_PODMAN=1 forbids skipping")
    pytest.skip(reason)


class Podman:
    def __init__(self, conf: Path) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.image = ""  # the test image, as podman names it once loaded

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, stdin: Any = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=stdin,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def podman(docker_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """Podman with the test image loaded from docker (removed again afterwards)."""
    _require_podman()
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    # Within this process's own hard limits (an unprivileged raise is refused), and nproc
    # under the 32768 podman gives conmon, which the container's limits may not exceed.
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    conf.write_text(
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
    )
    tool = Podman(conf)
    save = subprocess.Popen(["docker", "save", docker_image], stdout=subprocess.PIPE)
    loaded = tool.run("load", stdin=save.stdout)
    assert save.wait(timeout=300) == 0
    names = [
        line.split(":", 1)[1].strip()
        for line in loaded.stdout.splitlines()
        if line.startswith("Loaded image")
    ]
    assert names, loaded.stdout
    tool.image = names[0]
    yield tool
    tool.run("rmi", "--force", names[0], check=False)


def _pod_yaml(
    image: str, name: str, ports: dict[str, int], keys: dict[str, str], upstream: FakeUpstream
) -> str:
    statefulset = only(render("base"), "StatefulSet")
    template = statefulset["spec"]["template"]
    spec = template["spec"]
    hermes = container(statefulset)
    hermes["image"] = image
    hermes.pop("ports")
    hermes["env"] += [
        {"name": "HERMES_INGRESS_PORT", "value": str(ports["ingress"])},
        {"name": "HERMES_INGRESS_HOST", "value": "127.0.0.1"},
        {"name": "HERMES_DASHBOARD_PORT", "value": str(ports["dashboard"])},
        {"name": "HERMES_DASHBOARD_HOST", "value": "127.0.0.1"},
        {"name": "HERMES_GATEWAY_PORT_BASE", "value": str(ports["gateway"])},
        {"name": "HERMES_GATEWAY_HOST", "value": "127.0.0.1"},
        {"name": "HERMES_PROFILES_FILE", "value": "/etc/hermes/profiles/profiles.yaml"},
    ]
    hermes["volumeMounts"].append(
        {"name": "profiles", "mountPath": "/etc/hermes/profiles", "readOnly": True}
    )
    spec["hostNetwork"] = True
    claim = f"{name}-data"
    spec["volumes"] += [
        {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
        {"name": "profiles", "configMap": {"name": f"{name}-profiles", "optional": False}},
    ]
    profiles = {
        "profiles": [
            {
                "name": "default",
                "base_url": upstream.base_url,
                "model": "fake-model",
                "api_key_file": "/etc/hermes/secrets/model-api-key",
                "state": "running",
            }
        ]
    }
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hermes-secrets"},
            "type": "Opaque",
            # podman 4.3 writes `data` values into the files as they are, without the
            # base64 decoding Kubernetes does, and mounts nothing for `stringData`: so the
            # files' text goes in `data` (hex keys, valid base64 text all the same).
            "data": keys,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-profiles"},
            "data": {"profiles.yaml": yaml.safe_dump(profiles)},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": statefulset["spec"]["volumeClaimTemplates"][0]["spec"],
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": spec,
        },
    ]
    return yaml.safe_dump_all(documents)


def _post(port: int, path: str, key: str, body: dict[str, Any]) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _get(port: int, path: str, key: str) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"authorization": f"Bearer {key}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_the_rendered_pod_plays_and_serves_through_its_ingress(
    podman: Podman, tmp_path: Path
) -> None:
    name = f"hermes-kube-{uuid.uuid4().hex[:8]}"
    ports = {
        "ingress": free_port_range(1),
        "dashboard": free_port_range(1),
        "gateway": free_port_range(10),
    }
    # The Secret's files, made for this run only.
    keys = {"ingress-key": secrets.token_hex(16), "model-api-key": secrets.token_hex(16)}
    with FakeUpstream() as upstream:
        upstream.set(reply="hello from the fake provider")
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(_pod_yaml(podman.image, name, ports, keys, upstream))
        podman.run("secret", "rm", "hermes-secrets", check=False)  # left by an aborted run
        try:
            played = podman.run("kube", "play", str(manifest), check=False)
            assert played.returncode == 0, played.stdout + played.stderr
            ctr = f"{name}-hermes"

            def models() -> list[str]:
                status, body = _get(ports["ingress"], "/v1/models", keys["ingress-key"])
                assert status == 200, body
                return [m["id"] for m in body["data"]]

            assert wait_for(models, 120, "the ingress to list the profiles") == ["default"]
            status, body = _post(
                ports["ingress"],
                "/v1/chat/completions",
                keys["ingress-key"],
                {"model": "default", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert status == 200, body
            assert body["choices"][0]["message"]["content"] == "hello from the fake provider"
            # The profile's key came from the Secret's file, through the profiles file.
            sent = upstream.requests[-1]
            assert sent.headers["authorization"] == f"Bearer {keys['model-api-key']}"

            # The pod's own probes pass inside it, as kubelet runs them (and retries them
            # while the dashboard, which starts last, is still on its way).
            for flag, verdict in (("--liveness", "live"), ("--readiness", "ready")):

                def passes(flag: str = flag) -> str:
                    probe = podman.run("exec", ctr, "hermes", "healthcheck", flag, check=False)
                    assert probe.returncode == 0, probe.stdout + probe.stderr
                    return probe.stdout

                assert wait_for(passes, 60, f"healthcheck {flag}").strip().endswith(verdict)

            # The security context as rendered: read-only root, exactly the six
            # capabilities, no new privileges.
            status_text = podman.run("exec", ctr, "cat", "/proc/1/status").stdout
            fields = dict(
                line.split(":\t", 1) for line in status_text.splitlines() if ":\t" in line
            )
            wanted = sum(1 << CAPABILITY_BITS[c] for c in IMAGE_CAPABILITIES)
            assert int(fields["CapBnd"], 16) == wanted
            assert int(fields["CapEff"], 16) == wanted
            assert fields["NoNewPrivs"].strip() == "1"
            touch = podman.run("exec", ctr, "touch", "/etc/x", check=False)
            assert touch.returncode != 0 and "Read-only file system" in touch.stderr
        finally:
            logs = podman.run("logs", f"{name}-hermes", check=False)
            (tmp_path / "pod.log").write_text(logs.stdout + logs.stderr)
            podman.run("kube", "down", str(manifest), check=False)
            # kube down (4.3) leaves the volumes it made for the claim, the ConfigMap and
            # the Secret, and the podman secret.
            for volume in (f"{name}-data", f"{name}-profiles", "hermes-secrets"):
                podman.run("volume", "rm", "--force", volume, check=False)
            podman.run("secret", "rm", "hermes-secrets", check=False)
