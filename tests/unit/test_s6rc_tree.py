"""The image's s6-rc source tree in `root/` is well-formed and wired into the image.

`root/` is the image's own files laid out as the filesystem they become; the Dockerfile
copies it with one `COPY root/ /`. The services are in root/etc/s6-overlay/s6-rc.d/ and
the `user` bundle in root/etc/s6-overlay/user-bundles.d/, the two source directories
s6-overlay compiles.

Checked without s6: every definition has a valid type; oneshots have an `up` command
line whose script sits beside it and is executable; longruns have type, run, finish
and dependencies.d/ with executable scripts; every dependency and bundle member exists
(or is s6-overlay's `base`); there is no dependency cycle; the `user` bundle starts
everything; and the Dockerfile installs root/ as a whole, so that every file lands where
s6-overlay and the scripts look for it. The tree is also compiled for real with
s6-rc-compile (the host's, or the release's).

The kanban dispatcher's pair is checked here too: `dispatcher` pipes its output to
`dispatcher-log` (an s6-rc pipeline), and its scripts run with the checkout's lib.sh and
fake `id`/`s6-setuidgid`/`s6-log`: parked when HERMES_KANBAN_DISPATCHER is off, dropped
to hermes before any program runs as root. tests/s6/test_kanban_dispatcher.py runs the
same scripts under a real root s6-svscan.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "root"  # copied to / in the image
S6_DIR = "/etc/s6-overlay/s6-rc.d"
BUNDLES_DIR = "/etc/s6-overlay/user-bundles.d"
TREE = ROOT / S6_DIR.lstrip("/")
BUNDLES = ROOT / BUNDLES_DIR.lstrip("/")
DOCKERFILE = REPO / "Dockerfile"
# Services that s6-overlay itself defines and ours may depend on.
OVERLAY_PROVIDED = frozenset({"base"})
TYPES = frozenset({"oneshot", "longrun", "bundle"})


def _definitions() -> dict[str, Path]:
    """Every definition of both source directories, as s6-rc-compile reads them."""
    out: dict[str, Path] = {}
    for source in (TREE, BUNDLES):
        for entry in sorted(source.iterdir()):
            assert entry.is_dir(), f"{entry} is not a service definition directory"
            assert entry.name not in out, f"{entry.name} is defined twice"
            out[entry.name] = entry
    return out


def _services() -> dict[str, str]:
    out = {}
    for name, entry in _definitions().items():
        type_file = entry / "type"
        assert type_file.is_file(), f"{name}: missing type file"
        out[name] = type_file.read_text().strip()
    return out


def _in_image(path: str) -> Path:
    """Where an absolute path of the image comes from in the checkout."""
    assert path.startswith("/"), path
    return ROOT / path.lstrip("/")


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def _execline_words(path: Path) -> list[str]:
    lines = [
        ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    return shlex.split(" ".join(lines))


def test_every_definition_has_a_known_type() -> None:
    services = _services()
    assert services, "s6-rc.d is empty"
    for name, kind in services.items():
        assert kind in TYPES, f"{name}: type {kind!r} is not one of {sorted(TYPES)}"
    # user-bundles.d holds bundles only; services are defined in s6-rc.d.
    for entry in BUNDLES.iterdir():
        assert services[entry.name] == "bundle", f"{entry.name} in user-bundles.d is no bundle"


def test_the_expected_services_exist() -> None:
    services = _services()
    assert services.get("init-volume") == "oneshot"
    assert services.get("init-reconcile-profiles") == "oneshot"
    assert services.get("dashboard") == "longrun"
    assert services.get("svscan-gateways") == "longrun"
    assert services.get("dispatcher") == "longrun"
    assert services.get("dispatcher-log") == "longrun"
    assert services.get("ingress") == "longrun"
    assert services.get("ingress-log") == "longrun"
    assert services.get("user") == "bundle"


def test_oneshots_run_an_executable_script_beside_their_up() -> None:
    for name, kind in _services().items():
        if kind != "oneshot":
            continue
        up = TREE / name / "up"
        assert up.is_file(), f"{name}: oneshot without an up file"
        words = _execline_words(up)
        assert words, f"{name}: up is empty"
        beside = f"{S6_DIR}/{name}/"
        scripts = [w for w in words if w.startswith(beside)]
        assert scripts, f"{name}: up runs nothing from {beside}: {words}"
        for script in scripts:
            source = _in_image(script)
            assert source.is_file(), f"{name}: {script} has no source {source}"
            assert os.access(source, os.X_OK), f"{source} is not executable"
        for word in words:
            if word.startswith("/command/"):
                assert word in ("/command/with-contenv",), f"{name}: unexpected {word}"


def test_longruns_have_type_run_finish_and_dependencies() -> None:
    for name, kind in _services().items():
        if kind != "longrun":
            continue
        directory = TREE / name
        for script in ("run", "finish"):
            path = directory / script
            assert path.is_file(), f"{name}: missing {script}"
            assert os.access(path, os.X_OK), f"{name}/{script} is not executable"
            assert path.read_text().startswith("#!"), f"{name}/{script} has no shebang"
        assert (directory / "dependencies.d").is_dir(), f"{name}: missing dependencies.d/"


def test_dependencies_exist_and_are_acyclic() -> None:
    services = _services()
    definitions = _definitions()
    graph: dict[str, list[str]] = {}
    for name, kind in services.items():
        deps = _names(definitions[name] / "dependencies.d")
        if kind == "bundle":
            assert not deps, f"{name}: a bundle has no dependencies.d"
            continue
        assert "base" in deps, f"{name}: must depend on s6-overlay's base bundle"
        for dep in deps:
            assert dep in services or dep in OVERLAY_PROVIDED, f"{name}: unknown dependency {dep}"
            assert (definitions[name] / "dependencies.d" / dep).stat().st_size == 0
        graph[name] = [d for d in deps if d in services]

    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", f"dependency cycle: {' -> '.join([*path, node])}"
        state[node] = "active"
        for dep in graph.get(node, []):
            visit(dep, [*path, node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


def test_order_is_volume_then_reconcile_then_dashboard() -> None:
    assert (TREE / "init-reconcile-profiles" / "dependencies.d" / "init-volume").exists()
    assert (TREE / "svscan-gateways" / "dependencies.d" / "init-volume").exists()
    assert (TREE / "init-reconcile-profiles" / "dependencies.d" / "svscan-gateways").exists()
    assert (TREE / "dashboard" / "dependencies.d" / "init-reconcile-profiles").exists()
    # The dispatcher reads the default profile's config.yaml (made by the reconcile
    # oneshot) on a repaired volume; its logger drops to hermes once init-volume gave
    # that user its final ids (PUID/PGID).
    assert (TREE / "dispatcher" / "dependencies.d" / "init-volume").exists()
    assert (TREE / "dispatcher" / "dependencies.d" / "init-reconcile-profiles").exists()
    assert (TREE / "dispatcher-log" / "dependencies.d" / "init-volume").exists()


def test_the_dispatcher_pipes_its_output_to_its_logger() -> None:
    assert (TREE / "dispatcher" / "producer-for").read_text().strip() == "dispatcher-log"
    assert (TREE / "dispatcher-log" / "consumer-for").read_text().strip() == "dispatcher"
    run = (TREE / "dispatcher" / "run").read_text()
    assert "exec 2>&1" in run  # errors go down the pipe too


def test_user_bundle_contains_every_service_and_only_existing_ones() -> None:
    services = _services()
    contents = _names(BUNDLES / "user" / "contents.d")
    for member in contents:
        assert member in services, f"user bundle: {member} does not exist"
        assert (BUNDLES / "user" / "contents.d" / member).stat().st_size == 0
    expected = sorted(n for n, k in services.items() if k != "bundle")
    assert contents == expected


def _final_stage(text: str) -> list[str]:
    """The final stage's instructions, one string each (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    lines = [ln.strip() for ln in joined.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def test_dockerfile_installs_root_as_one_tree() -> None:
    stage = _final_stage(DOCKERFILE.read_text())
    copies = [ln.split() for ln in stage if ln.upper().startswith(("COPY ", "ADD "))]
    from_context = [c for c in copies if not any(w.startswith("--from=") for w in c)]
    # The image's own files come in one piece; everything else is the builder's output.
    assert from_context == [["COPY", "root/", "/"]], from_context
    # The build context holds root/ (.dockerignore starts by excluding everything).
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "!root/" in ignore


def test_every_file_of_root_lands_where_the_image_expects_it() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file())
    # Only these directories of the image are ours to add to.
    places = (
        "opt/hermes/bin/",  # first on PATH: the exec shim
        "opt/hermes/libexec/",  # entrypoint, main wrapper, shared shell helpers
        "etc/s6-overlay/s6-rc.d/",  # service definitions, scripts beside them
        "etc/s6-overlay/user-bundles.d/user/",  # the `user` bundle
    )
    for name in files:
        assert name.startswith(places), f"root/{name} is outside {places}"
    # s6-overlay >= 3.2.3 reads user bundles from user-bundles.d; a `user` bundle in
    # s6-rc.d is the deprecated place (a warning at every boot).
    assert not (TREE / "user").exists()
    assert (BUNDLES / "user" / "type").read_text().strip() == "bundle"
    # The shim is the `hermes` first on PATH; the entrypoint is the image's ENTRYPOINT.
    dockerfile = DOCKERFILE.read_text()
    assert "PATH=/opt/hermes/bin:" in dockerfile
    assert "opt/hermes/bin/hermes" in files
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.MULTILINE)
    assert entrypoint is not None
    assert _in_image(entrypoint.group(1)).is_file(), entrypoint.group(1)
    # Every path of the image's own that a file of root/ names (scripts, helpers, up
    # lines) exists in root/ and, when it is run, is executable.
    named = re.compile(r"(/(?:opt/hermes/(?:bin|libexec)|etc/s6-overlay/s6-rc\.d)/[\w./-]*\w)")
    for name in files:
        for path in named.findall((ROOT / name).read_text()):
            source = _in_image(path)
            assert source.exists(), f"root/{name} names {path}, which root/ does not have"
            if source.is_file() and source.read_text().startswith("#!"):
                assert os.access(source, os.X_OK), f"{source} is not executable"


OFFLINE_ARCH_TARBALL = (
    REPO.parent / "shared" / "offline" / "s6-overlay" / "v3.2.3.2" / "s6-overlay-x86_64.tar.xz"
)


def _s6_rc_compile(tmp_path: Path) -> str:
    """The host's s6-rc-compile, else the one from the s6-overlay release tarball.

    Debian bookworm has no s6-rc package; s6-rc-compile only writes a database, so
    the release build runs from wherever it is unpacked.
    """
    found = shutil.which("s6-rc-compile")
    if found:
        return found
    if not OFFLINE_ARCH_TARBALL.is_file():
        pytest.fail(f"no s6-rc-compile on PATH and no {OFFLINE_ARCH_TARBALL} to take it from")
    unpacked = tmp_path / "s6-overlay"
    unpacked.mkdir()
    subprocess.run(["tar", "-C", str(unpacked), "-xJf", str(OFFLINE_ARCH_TARBALL)], check=True)
    return str(next(unpacked.glob("package/admin/s6-rc-*/command/s6-rc-compile")))


def test_tree_compiles_with_s6_rc(tmp_path: Path) -> None:
    # Stand in for s6-overlay's own definitions: an empty `base` bundle.
    overlay = tmp_path / "overlay"
    (overlay / "base" / "contents.d").mkdir(parents=True)
    (overlay / "base" / "type").write_text("bundle\n")
    # The source directories in s6-overlay's order (its rc.init): s6-rc.d, user-bundles.d.
    sources = [str(TREE), str(BUNDLES), str(overlay)]
    compiler = _s6_rc_compile(tmp_path)
    proc = subprocess.run(
        [compiler, "-v2", str(tmp_path / "db"), *sources],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # The compiled database knows every service of ours.
    names = (tmp_path / "db" / "servicedirs").iterdir()
    assert {
        "svscan-gateways",
        "dashboard",
        "dispatcher",
        "dispatcher-log",
        "ingress",
        "ingress-log",
    } <= {n.name for n in names}
    # ... and the dispatcher and its logger as one pipeline.
    s6_rc_db = Path(compiler).with_name("s6-rc-db")
    if s6_rc_db.is_file():
        proc = subprocess.run(
            [str(s6_rc_db), "-c", str(tmp_path / "db"), "pipeline", "dispatcher"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        # Producer first, then its consumer.
        assert proc.stdout.split() == ["dispatcher/dispatcher-log"], proc.stdout
        ingress = subprocess.run(
            [str(s6_rc_db), "-c", str(tmp_path / "db"), "pipeline", "ingress"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ingress.returncode == 0, ingress.stderr
        assert ingress.stdout.split() == ["ingress/ingress-log"], ingress.stdout


def test_gateway_svscan_runs_as_hermes_and_signals_readiness() -> None:
    """Gateway slots get their own s6-svscan, run as hermes, never under root's."""
    service = TREE / "svscan-gateways"
    run = (service / "run").read_text()
    assert 'as_hermes "${HERMES_HOME:-/opt/data}" s6-svscan -d 3 "$scandir"' in run
    assert "user=hermes" in run  # the one directory it hands over, chowned before the drop
    lib = (REPO / "root" / "opt" / "hermes" / "libexec" / "lib.sh").read_text()
    assert 'exec s6-setuidgid hermes "$@"' in lib
    assert (service / "notification-fd").read_text().strip() == "3"
    dockerfile = DOCKERFILE.read_text()
    assert "HERMES_S6_SCANDIR=/run/hermes/service" in dockerfile
    # The reconcile oneshot no longer opens s6-overlay's root scandir to hermes.
    reconcile = (TREE / "init-reconcile-profiles" / "run").read_text()
    assert "chgrp" not in reconcile and "chmod" not in reconcile


# -- the dispatcher's scripts, run on the host --------------------------------------------

LIB = REPO / "root" / "opt" / "hermes" / "libexec" / "lib.sh"
LIB_LINE = ". /opt/hermes/libexec/lib.sh"
PARK = 125
# `id -u` answers FAKE_UID; `s6-setuidgid` says whom it drops to (and whether the log
# directory existed at that moment), then runs the rest; `s6-log` and the stand-in for
# `hermes` say how they were called.
FAKES = {
    "id": '#!/bin/sh\n[ "$1" = -u ] && { echo "${FAKE_UID:?}"; exit 0; }\nexit 1\n',
    "s6-setuidgid": (
        "#!/bin/sh\n"
        'echo "dropped to $1 home=$HOME user=$USER"\n'
        '[ -e "${WATCH:-/nonexistent}" ] && echo "watched path existed before the drop"\n'
        'shift\nexec "$@"\n'
    ),
    "s6-log": '#!/bin/sh\necho "s6-log $* umask=$(umask)"\n',
    "fake-hermes": (
        '#!/bin/sh\necho "hermes $* home=$HOME hermes_home=$HERMES_HOME umask=$(umask)"\n'
    ),
}


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _run_image_script(
    tmp_path: Path, fakes: Path, name: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    text = (TREE / name).read_text()
    assert LIB_LINE in text
    script = tmp_path / name.replace("/", "-")
    script.write_text(text.replace(LIB_LINE, f". {LIB}"))
    return subprocess.run(
        ["sh", str(script), *args],
        env={
            "PATH": f"{fakes}:{os.environ['PATH']}",
            "HERMES_BIN": str(fakes / "fake-hermes"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("switch", ["0", "false", "NO"])
def test_a_dispatcher_switched_off_exits_and_is_parked(
    tmp_path: Path, fakes: Path, switch: str
) -> None:
    env = {"HERMES_KANBAN_DISPATCHER": switch, "FAKE_UID": "0", "HERMES_HOME": str(tmp_path)}
    run = _run_image_script(tmp_path, fakes, "dispatcher/run", env)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"dispatcher: disabled (HERMES_KANBAN_DISPATCHER={switch})\n"
    finish = _run_image_script(tmp_path, fakes, "dispatcher/finish", env, "0", "0")
    assert finish.returncode == PARK
    assert finish.stdout == finish.stderr == ""


@pytest.mark.parametrize("switch", [None, "", "1", "yes", "of"])
def test_the_dispatcher_is_on_unless_switched_off(
    tmp_path: Path, fakes: Path, switch: str | None
) -> None:
    """On by default, and a typo never turns it off; a killed one is restarted."""
    env = {"FAKE_UID": "10000", "HERMES_HOME": str(tmp_path)}
    if switch is not None:
        env["HERMES_KANBAN_DISPATCHER"] = switch
    run = _run_image_script(tmp_path, fakes, "dispatcher/run", env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("hermes kanban daemon "), run.stdout
    killed = _run_image_script(tmp_path, fakes, "dispatcher/finish", env, "256", "9")
    assert killed.returncode == 0
    assert killed.stdout == "dispatcher: exited (code 256, signal 9); s6 restarts it\n"
    stopped = _run_image_script(tmp_path, fakes, "dispatcher/finish", env, "0", "0")
    assert (stopped.returncode, stopped.stdout) == (0, "")


def test_root_runs_the_dispatcher_as_hermes(tmp_path: Path, fakes: Path) -> None:
    env = {"FAKE_UID": "0", "HERMES_HOME": str(tmp_path / "data")}
    run = _run_image_script(tmp_path, fakes, "dispatcher/run", env)
    assert run.returncode == 0, run.stderr
    data = tmp_path / "data"
    assert run.stdout.splitlines() == [
        f"dropped to hermes home={data} user=hermes",
        f"hermes kanban daemon home={data} hermes_home={data} umask=0077",
    ]
    as_user = _run_image_script(tmp_path, fakes, "dispatcher/run", {**env, "FAKE_UID": "10000"})
    assert as_user.stdout.splitlines() == [
        f"hermes kanban daemon home={data} hermes_home={data} umask=0077"
    ]


def test_root_drops_before_the_logger_makes_its_directory(tmp_path: Path, fakes: Path) -> None:
    data = tmp_path / "data"
    log_dir = data / "logs" / "dispatcher"
    env = {"FAKE_UID": "0", "HERMES_HOME": str(data), "WATCH": str(log_dir)}
    run = _run_image_script(tmp_path, fakes, "dispatcher-log/run", env)
    assert run.returncode == 0, run.stderr
    # The directory did not exist when root handed over: the hermes user made it.
    assert run.stdout.splitlines() == [
        f"dropped to hermes home={data} user=hermes",
        f"s6-log 1 n10 s1000000 T {log_dir} umask=0077",
    ]
    assert log_dir.is_dir()
    again = _run_image_script(tmp_path, fakes, "dispatcher-log/run", env)
    assert "watched path existed before the drop" in again.stdout  # the fake can tell
    finish = subprocess.run(
        ["sh", str(TREE / "dispatcher-log" / "finish"), "256", "9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finish.returncode == 0
    assert "s6-log exited (code 256, signal 9)" in finish.stderr


# -- the ingress's scripts, run on the host (the dispatcher's pattern) ---------------------


def test_the_ingress_starts_after_the_profiles_and_pipes_to_its_logger() -> None:
    assert (TREE / "ingress" / "dependencies.d" / "init-volume").exists()
    assert (TREE / "ingress" / "dependencies.d" / "init-reconcile-profiles").exists()
    assert (TREE / "ingress-log" / "dependencies.d" / "init-volume").exists()
    assert (TREE / "ingress" / "producer-for").read_text().strip() == "ingress-log"
    assert (TREE / "ingress-log" / "consumer-for").read_text().strip() == "ingress"
    assert "exec 2>&1" in (TREE / "ingress" / "run").read_text()


@pytest.mark.parametrize("switch", ["0", "false", "NO"])
def test_an_ingress_switched_off_exits_and_is_parked(
    tmp_path: Path, fakes: Path, switch: str
) -> None:
    env = {"HERMES_INGRESS": switch, "FAKE_UID": "0", "HERMES_HOME": str(tmp_path)}
    run = _run_image_script(tmp_path, fakes, "ingress/run", env)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"ingress: disabled (HERMES_INGRESS={switch})\n"
    finish = _run_image_script(tmp_path, fakes, "ingress/finish", env, "0", "0")
    assert finish.returncode == PARK
    assert finish.stdout == finish.stderr == ""


@pytest.mark.parametrize("switch", [None, "", "1", "yes", "of"])
def test_the_ingress_is_on_unless_switched_off(
    tmp_path: Path, fakes: Path, switch: str | None
) -> None:
    """On by default, and a typo never turns it off; a killed one is restarted, one
    with a configuration error (exit 78) is parked."""
    env = {"FAKE_UID": "10000", "HERMES_HOME": str(tmp_path)}
    if switch is not None:
        env["HERMES_INGRESS"] = switch
    run = _run_image_script(tmp_path, fakes, "ingress/run", env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("hermes ingress run "), run.stdout
    killed = _run_image_script(tmp_path, fakes, "ingress/finish", env, "256", "9")
    assert killed.returncode == 0
    assert killed.stdout == "ingress: exited (code 256, signal 9); s6 restarts it\n"
    config = _run_image_script(tmp_path, fakes, "ingress/finish", env, "78", "0")
    assert config.returncode == PARK
    assert "configuration error" in config.stdout
    stopped = _run_image_script(tmp_path, fakes, "ingress/finish", env, "0", "0")
    assert (stopped.returncode, stopped.stdout) == (0, "")


def test_root_runs_the_ingress_as_hermes_on_every_interface(tmp_path: Path, fakes: Path) -> None:
    fakes.joinpath("fake-hermes").write_text(
        '#!/bin/sh\necho "hermes $* home=$HOME host=$HERMES_INGRESS_HOST umask=$(umask)"\n'
    )
    data = tmp_path / "data"
    env = {"FAKE_UID": "0", "HERMES_HOME": str(data)}
    run = _run_image_script(tmp_path, fakes, "ingress/run", env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"dropped to hermes home={data} user=hermes",
        f"hermes ingress run home={data} host=0.0.0.0 umask=0077",
    ]
    # The operator's bind address is kept.
    own = _run_image_script(
        tmp_path, fakes, "ingress/run", {**env, "FAKE_UID": "10000", "HERMES_INGRESS_HOST": "::1"}
    )
    assert own.stdout.splitlines() == [f"hermes ingress run home={data} host=::1 umask=0077"]


def test_root_drops_before_the_ingress_logger_makes_its_directory(
    tmp_path: Path, fakes: Path
) -> None:
    data = tmp_path / "data"
    log_dir = data / "logs" / "ingress"
    env = {"FAKE_UID": "0", "HERMES_HOME": str(data), "WATCH": str(log_dir)}
    run = _run_image_script(tmp_path, fakes, "ingress-log/run", env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"dropped to hermes home={data} user=hermes",
        f"s6-log 1 n10 s1000000 T {log_dir} umask=0077",
    ]
    assert log_dir.is_dir()
