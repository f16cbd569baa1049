"""deploy/kubernetes/: every kustomization renders with `kubectl kustomize`, each object
is valid against a pinned Kubernetes version's schemas (kubernetes-validate, strict: an
unknown or misspelt field fails), and the pod is what docs/kubernetes.md promises: a
read-only root with tmpfs /run and /tmp, every capability dropped but the ones the image
needs, the probes of `hermes healthcheck`, one volume per replica, secrets only as files.

Without kubectl the module is skipped, unless HERMES_REQUIRE_KUBECTL=1 (CI), where that
is a failure.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.home import HermesHome
from tests.conftest import REPO, run_hermes

DEPLOY = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor release still maintained upstream
KUSTOMIZATIONS = sorted(
    str(path.parent.relative_to(DEPLOY)) for path in DEPLOY.rglob("kustomization.yaml")
)
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]
IMAGE_CAPABILITIES = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"}
# What the Pod Security Standards' "baseline" profile lets a pod add: keeping to it
# means the pod is admitted in a namespace that enforces baseline.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
# Settings whose value is a secret: only ever given as NAME_FILE.
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWORD_HASH|DATABASE_URL)$")


def _require_kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return kubectl
    reason = "kubectl not found (Debian package kubernetes-client)"
    if os.environ.get("HERMES_REQUIRE_KUBECTL") == "1":
        pytest.fail(reason + "; HERMES_REQUIRE_KUBECTL=1 forbids skipping")
    pytest.skip(reason)


@functools.cache
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [_require_kubectl(), "kustomize", str(DEPLOY / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {kustomization}:\n{proc.stderr}"
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc is not None]
    assert all(isinstance(doc, dict) and doc for doc in objects), proc.stdout
    return tuple(objects)


def render(kustomization: str) -> list[dict[str, Any]]:
    """A fresh copy of the rendered objects: a caller may change them (the podman test
    does), and the cache must keep what kubectl rendered for every later test."""
    return copy.deepcopy(list(_render(kustomization)))


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(statefulset: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(statefulset).get("env", [])}


def volume_at(statefulset: dict[str, Any], path: str) -> dict[str, Any]:
    """The pod volume (or volumeClaimTemplate) mounted at `path` exactly."""
    mounts = [m for m in container(statefulset)["volumeMounts"] if m["mountPath"] == path]
    assert len(mounts) == 1, f"expected one mount at {path}"
    name = mounts[0]["name"]
    for volume in statefulset["spec"]["template"]["spec"].get("volumes", []):
        if volume["name"] == name:
            return {"mount": mounts[0], **volume}
    for claim in statefulset["spec"].get("volumeClaimTemplates", []):
        if claim["metadata"]["name"] == name:
            return {"mount": mounts[0], "claimTemplate": claim}
    raise AssertionError(f"no volume named {name}")


def volume_holding(statefulset: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume whose mount holds the file `path` (its deepest mount above it)."""
    mounts = [
        m["mountPath"]
        for m in container(statefulset)["volumeMounts"]
        if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is on no volume"
    return volume_at(statefulset, max(mounts, key=len))


def test_every_kustomization_is_found() -> None:
    assert "base" in KUSTOMIZATIONS and "overlays/shared-board" in KUSTOMIZATIONS


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_and_validates_against_the_pinned_schemas(kustomization: str) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    objects = render(kustomization)
    kinds = sorted(o["kind"] for o in objects)
    assert "StatefulSet" in kinds and kinds.count("Service") >= 3, kinds
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {exc}")


def test_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: strict validation refuses an unknown field."""
    import kubernetes_validate

    statefulset = only(render("base"), "StatefulSet")
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    container(broken)["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pod_security_context(kustomization: str) -> None:
    statefulset = only(render(kustomization), "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # fsGroup would make /run group-writable, which svscan-gateways refuses.
    assert "fsGroup" not in pod["securityContext"]
    for shared in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(shared), shared
    # Service links would set HERMES_INGRESS_PORT=tcp://... for a Service hermes-ingress.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False

    security = container(statefulset)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"]["drop"] == ["ALL"]
    added = set(security["capabilities"]["add"])
    assert added == IMAGE_CAPABILITIES
    assert added <= BASELINE_CAPABILITIES, added - BASELINE_CAPABILITIES
    assert env_of(statefulset)["S6_READ_ONLY_ROOT"] == "1"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_writable_places_on_a_read_only_root(kustomization: str) -> None:
    statefulset = only(render(kustomization), "StatefulSet")
    # s6-overlay needs /run writable and executable; a tmpfs's root is 1777 (an emptyDir
    # on disk would be 0777, which svscan-gateways refuses to build /run/hermes under).
    for path in ("/run", "/tmp"):
        volume = volume_at(statefulset, path)
        assert volume["emptyDir"]["medium"] == "Memory", path
        assert volume["emptyDir"]["sizeLimit"], path
    data = volume_at(statefulset, "/opt/data")
    claim = data["claimTemplate"]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"]
    # One claim per replica: no pod volume is a claim all replicas would share.
    assert not [
        v
        for v in statefulset["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    for mount in container(statefulset)["volumeMounts"]:
        if mount["mountPath"] not in ("/opt/data", "/run", "/tmp"):
            assert mount.get("readOnly") is True, mount


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_are_the_healthcheck_commands(
    kustomization: str, hermes_home: HermesHome, tmp_path: Path
) -> None:
    hermes = container(only(render(kustomization), "StatefulSet"))
    expected = {
        "startupProbe": "--liveness",
        "livenessProbe": "--liveness",
        "readinessProbe": "--readiness",
    }
    for probe_name, flag in expected.items():
        probe = hermes[probe_name]
        command = probe["exec"]["command"]
        assert command[:3] == ["hermes", "healthcheck", flag], command
        timeout = float(command[command.index("--timeout") + 1])
        assert probe["timeoutSeconds"] > timeout + 1, "room for Python's start"
        # The CLI runs the command as written (exit 2 would be a usage error): in an
        # empty home with no tree nothing is live, and the default profile is not ready.
        proc = run_hermes(
            *command[1:], env={"HERMES_S6_SCANDIR": str(tmp_path / "none"), "HERMES_INGRESS": "0"}
        )
        verdict = ("not live" if flag == "--liveness" else "not ready", 1)
        assert (proc.stdout.strip().splitlines()[-1], proc.returncode) == verdict, proc.stderr
    # A slow first boot (the volume repair) must not be cut short by liveness.
    startup = hermes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_resources_ports_and_services(kustomization: str) -> None:
    objects = render(kustomization)
    statefulset = only(objects, "StatefulSet")
    hermes = container(statefulset)
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(hermes["resources"][bound]), bound
    ports = {p["name"]: p["containerPort"] for p in hermes["ports"]}
    assert ports == {"ingress": 8640, "gateway": 8642, "dashboard": 9119}
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    governing = statefulset["spec"]["serviceName"]
    assert named(objects, "Service", governing)["spec"]["clusterIP"] == "None"
    doors = {"hermes-ingress": "ingress", "hermes-dashboard": "dashboard"}
    doors["hermes-gateway"] = "gateway"
    for name, port in doors.items():
        service = named(objects, "Service", name)
        selector = service["spec"]["selector"]
        pod_labels = {**labels, "statefulset.kubernetes.io/pod-name": "hermes-0"}
        assert selector.items() <= pod_labels.items(), f"{name} selects no hermes pod"
        assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_secrets_are_files_never_values(kustomization: str) -> None:
    objects = render(kustomization)
    # The cluster holds the Secrets (kubectl create secret): none is rendered from here.
    assert not [o for o in objects if o["kind"] == "Secret"]
    text = yaml.safe_dump_all(objects)
    assert "secretKeyRef" not in text, "a secret in an environment variable"
    assert not re.search(r"\b(sk-[A-Za-z0-9]{8,}|postgres(ql)?://[^\s:@/]+:[^\s@/]+@)", text)
    statefulset = only(objects, "StatefulSet")
    env = env_of(statefulset)
    for name, value in env.items():
        if name.endswith("_FILE"):
            volume = volume_holding(statefulset, value)
            assert "secret" in volume or "configMap" in volume, (name, volume)
            if SECRET_NAME.search(name.removesuffix("_FILE")):
                assert "secret" in volume, f"{name} names a file that is not a Secret's"
                assert volume["mount"]["readOnly"] is True
        else:
            assert not SECRET_NAME.search(name), f"{name}={value!r} is a secret given inline"
    assert env["HERMES_INGRESS_KEY_FILE"].startswith("/etc/hermes/secrets/")


@pytest.mark.parametrize("kustomization", ["base"])
def test_base_is_one_replica(kustomization: str) -> None:
    objects = render(kustomization)
    assert only(objects, "StatefulSet")["spec"]["replicas"] == 1
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]


def test_shared_board_overlay(tmp_path: Path) -> None:
    objects = render("overlays/shared-board")
    statefulset = only(objects, "StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["replicas"] >= 2
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"

    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < statefulset["spec"]["replicas"]

    env = env_of(statefulset)
    board = volume_holding(statefulset, env["HERMES_KANBAN_DATABASE_URL_FILE"])
    assert board["secret"]["secretName"] == "hermes-board"
    profiles_path = env["HERMES_PROFILES_FILE"]
    profiles_volume = volume_holding(statefulset, profiles_path)
    configmap = named(objects, "ConfigMap", profiles_volume["configMap"]["name"])
    key = profiles_path.removeprefix(profiles_volume["mount"]["mountPath"].rstrip("/") + "/")
    declared_text = configmap["data"][key]

    # The ConfigMap's file is one the boot reconciler accepts (the key file it names
    # points at a temp file here), and it names no key itself.
    from hermes_container.declared import load

    key_paths = set(re.findall(r"api_key_file:\s*(\S+)", declared_text))
    assert key_paths, "the example profiles take their model key from a file"
    for path in key_paths:
        assert volume_holding(statefulset, path)["secret"]["secretName"] == "hermes-secrets"
    (tmp_path / "model-api-key").write_text("sk-test-key\n")
    for path in key_paths:
        declared_text = declared_text.replace(path, str(tmp_path / "model-api-key"))
    (tmp_path / "profiles.yaml").write_text(declared_text)
    declaration = load(tmp_path / "profiles.yaml", env={})
    assert len(declaration.profiles) >= 2

    # Every replica's default profile has its own key: the gateway Service keeps to one.
    gateway = named(objects, "Service", "hermes-gateway")
    assert gateway["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "hermes-0"
    affinity = statefulset["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"]


def test_overlays_are_all_known() -> None:
    assert OVERLAYS == ["overlays/shared-board"], "a new overlay needs its own test here"
