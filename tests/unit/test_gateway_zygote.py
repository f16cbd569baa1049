"""The gateway zygote (hermes_container/gateway/zygote.py, launcher.py) with real processes:
a real `hermes gateway zygote`, real `gateway run --supervised` launchers and gateways
relaying to the fake provider."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hermes_container.commands import gateway_launcher as launcher_module
from hermes_container.gateway import zygote_wire
from hermes_container.gateway.lock import parent_pid
from hermes_container.gateway.zygote_wire import REPLY_REFUSED, encode_request
from hermes_container.home import HermesHome
from tests.conftest import wait_for
from tests.unit.conftest import GatewayProc, GatewayProfile
from tests.unit.test_s6rc_tree import FAKES, LIB, LIB_LINE, TREE

ZYGOTE_ENV = "HERMES_GATEWAY_ZYGOTE"


class Zygote:
    def __init__(self, popen: subprocess.Popen[bytes], path: Path, log: Path) -> None:
        self.popen, self.path, self.log = popen, path, log

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def zygote(hermes_home: HermesHome) -> Iterator[Zygote]:
    # A short directory: a Unix socket's path must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="hz-", dir="/tmp"))
    path = base / "z" / "sock"
    log = base / "zygote.log"
    with log.open("wb") as err:
        popen = subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "gateway", "zygote", "--socket", str(path)],
            env={**os.environ, "HERMES_ALLOW_ROOT_GATEWAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    z = Zygote(popen, path, log)
    wait_for(lambda: "serving on" in z.text() or popen.poll() is not None, 30, "the zygote")
    assert popen.poll() is None, z.text()
    yield z
    if popen.poll() is None:
        popen.terminate()
        popen.wait(10)
    shutil.rmtree(base, ignore_errors=True)


def launch(profile: GatewayProfile, zygote: Zygote, *args: str, **env: str) -> GatewayProc:
    return profile.spawn("--supervised", *args, env={ZYGOTE_ENV: str(zygote.path), **env})


def gateway_pid(proc: GatewayProc) -> int:
    """The pid of the gateway process serving for `proc` (its state file says)."""

    def running() -> int | None:
        state = proc.profile.state()
        return state.pid if state.gateway_state == "running" else None

    pid: int = wait_for(running, 20, "state running")
    return pid


def rss_anon_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_a_supervised_run_is_forked_from_the_zygote_and_stops_gracefully(
    profile: GatewayProfile, zygote: Zygote, tmp_path: Path
) -> None:
    # Bytecode, as in the image (its venv is compiled when it is built).
    cache = tmp_path / "pycache"
    sources = [str(Path(m.__file__)) for m in (launcher_module, zygote_wire) if m.__file__]
    subprocess.run(
        [sys.executable, "-X", f"pycache_prefix={cache}", "-m", "py_compile", *sources],
        check=True,
    )
    proc = launch(profile, zygote, PYTHONPYCACHEPREFIX=str(cache)).wait_ready()
    pid = gateway_pid(proc)
    assert pid != proc.pid
    assert parent_pid(pid) == zygote.popen.pid
    # The launcher is a bare interpreter running launcher.py alone, not the CLI.
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-S" in cmdline and b"--zygote-fd" in cmdline
    # ... and it stays about as small as one (the CLI it replaced holds ~3 MB more).
    bare = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "print(flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert bare.stdout is not None and bare.stdout.readline() == b"\n"  # started
        assert rss_anon_kb(proc.pid) <= rss_anon_kb(bare.pid) + 1024
    finally:
        bare.kill()
        bare.wait(10)
    with profile.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            headers=profile.auth,
            json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert reply.status_code == 200, reply.text
    assert proc.terminate() == 0  # SIGTERM to the launcher reaches the gateway
    state = profile.state()
    assert state.gateway_state == "stopped"
    assert "SIGTERM" in (state.exit_reason or "")
    wait_for(lambda: not alive(pid), 10, "the gateway's end")


def test_a_gateways_death_by_signal_is_the_launchers(
    profile: GatewayProfile, zygote: Zygote
) -> None:
    proc = launch(profile, zygote).wait_ready()
    os.kill(gateway_pid(proc), signal.SIGKILL)
    assert proc.popen.wait(10) == -signal.SIGKILL


def test_a_gateways_exit_code_is_the_launchers(profile: GatewayProfile, zygote: Zygote) -> None:
    profile.configure(model={"base_url": "not a url"})
    in_process = profile.spawn("--supervised").popen.wait(30)
    assert in_process != 0
    assert launch(profile, zygote).popen.wait(30) == in_process


def test_sigkill_of_the_launcher_kills_its_gateway_at_once(
    profile: GatewayProfile, zygote: Zygote
) -> None:
    proc = launch(profile, zygote).wait_ready()
    pid = gateway_pid(proc)
    proc.popen.kill()
    proc.popen.wait(10)
    wait_for(lambda: not alive(pid), 10, "the orphaned gateway's death")
    assert "went away; killing the gateway" in zygote.text()


def test_when_the_zygote_dies_launchers_exit_111_and_gateways_die(
    make_profile: Callable[[str], GatewayProfile], zygote: Zygote
) -> None:
    procs = [launch(make_profile(name), zygote).wait_ready() for name in ("alpha", "beta")]
    pids = [gateway_pid(p) for p in procs]
    zygote.popen.kill()
    zygote.popen.wait(10)
    assert [p.popen.wait(10) for p in procs] == [111, 111]
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "the gateways' death")


def test_without_a_zygote_the_gateway_runs_in_process(profile: GatewayProfile) -> None:
    proc = profile.spawn("--supervised", env={ZYGOTE_ENV: "/nonexistent/zygote.sock"})
    proc.wait_ready()
    assert gateway_pid(proc) == proc.pid
    assert "running the gateway in-process" in proc.stderr()
    assert proc.terminate() == 0


def test_readiness_reaches_the_notify_fd(profile: GatewayProfile, zygote: Zygote) -> None:
    read_end, write_end = os.pipe()
    try:
        proc = profile.spawn(
            "--supervised",
            "--notify-fd",
            str(write_end),
            env={ZYGOTE_ENV: str(zygote.path)},
            pass_fds=(write_end,),
        )
        os.close(write_end)
        # One newline once the port accepts, then EOF: the launcher kept no copy.
        assert os.read(read_end, 10) == b"\n"
        assert os.read(read_end, 10) == b""
        assert httpx.get(profile.url("/health"), trust_env=False).status_code == 200
        assert parent_pid(gateway_pid(proc)) == zygote.popen.pid
    finally:
        os.close(read_end)


def test_each_gateway_gets_its_own_launchers_environment(
    make_profile: Callable[[str], GatewayProfile], zygote: Zygote
) -> None:
    keys = {"alpha": "key-alpha-0123456789abcdef", "beta": "key-beta-0123456789abcdefg"}
    profiles = {name: make_profile(name) for name in keys}
    for name, key in keys.items():
        profile = profiles[name]
        env_file = profile.dir / ".env"
        kept = [ln for ln in env_file.read_text().splitlines() if "API_SERVER_KEY" not in ln]
        env_file.write_text("".join(f"{ln}\n" for ln in kept))
        launch(profile, zygote, API_SERVER_KEY=key).wait_ready()
    for name, profile in profiles.items():
        for other, other_key in keys.items():
            answer = httpx.get(
                profile.url("/v1/models"),
                headers={"authorization": f"Bearer {other_key}"},
                trust_env=False,
            )
            assert answer.status_code == (200 if other == name else 401), (name, other)


def test_a_peer_of_another_uid_is_refused(tmp_path: Path) -> None:
    """A zygote running as `nobody`; we (root, who may connect to any socket) are
    another uid: SO_PEERCRED says so and nothing is forked."""
    if os.geteuid() != 0:
        reason = "needs root to run the zygote as another uid"
        if os.environ.get("HERMES_REQUIRE_ROOT") == "1":
            pytest.fail(f"{reason}; HERMES_REQUIRE_ROOT=1 forbids skipping")
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="hz-", dir="/tmp"))
    base.chmod(0o755)
    directory = base / "z"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    path = directory / "sock"
    popen = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "gateway", "zygote", "--socket", str(path)],
        env={**os.environ, "HERMES_HOME": str(base / "home")},
        user=65534,
        group=65534,
        extra_groups=[],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: path.exists() or popen.poll() is not None, 30, "the zygote's socket")
        assert popen.poll() is None
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(str(path))
            reply = sock.recv(300)
        assert reply.startswith(REPLY_REFUSED) and b"peer uid" in reply
    finally:
        popen.terminate()
        _, err = popen.communicate(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
    assert b"refused a launcher of uid 0" in err


def test_only_a_supervised_gateway_run_is_forked(zygote: Zygote) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(str(zygote.path))
        sock.send(encode_request(["hermes", "status"], {}, "/", 0o077, []))
        reply = sock.recv(300)
    assert reply.startswith(REPLY_REFUSED) and b"gateway run --supervised" in reply


def test_a_second_run_names_the_forked_gateway_as_the_holder(
    profile: GatewayProfile, zygote: Zygote
) -> None:
    pid = gateway_pid(launch(profile, zygote).wait_ready())
    second = profile.spawn()
    assert second.popen.wait(30) == 1
    assert f"is already running (pid {pid})" in second.stderr()


def test_the_zygote_holds_no_variable_a_gateway_may_not_see(hermes_home: HermesHome) -> None:
    """A forked gateway's /proc/PID/environ is the zygote's exec-time block."""
    base = Path(tempfile.mkdtemp(prefix="hz-", dir="/tmp"))
    path = base / "z" / "sock"
    env = {
        **os.environ,
        "HERMES_ALLOW_ROOT_GATEWAY": "1",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "dashboard-secret-value",
        "HERMES_GATEWAY_ENV_DENY": "MY_SECRET",
        "MY_SECRET": "operator-secret-value",
    }
    popen = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "gateway", "zygote", "--socket", str(path)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: path.exists() or popen.poll() is not None, 30, "the zygote's socket")
        environ = Path(f"/proc/{popen.pid}/environ").read_bytes()
        assert b"HERMES_HOME=" in environ
        assert b"secret-value" not in environ
    finally:
        popen.terminate()
        popen.wait(10)
        shutil.rmtree(base, ignore_errors=True)


# -- the image's gateway-zygote service scripts, run on the host ---------------------------


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def image_script(
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


@pytest.mark.parametrize("switch", [None, "", "0", "of", "no"])
def test_the_image_zygote_is_off_unless_switched_on(
    tmp_path: Path, fakes: Path, switch: str | None
) -> None:
    env = {"FAKE_UID": "0", "HERMES_HOME": str(tmp_path)}
    if switch is not None:
        env[ZYGOTE_ENV] = switch
    run = image_script(tmp_path, fakes, "gateway-zygote/run", env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("gateway-zygote: disabled"), run.stdout
    finish = image_script(tmp_path, fakes, "gateway-zygote/finish", env, "0", "0")
    assert finish.returncode == 125  # parked: no restarts


@pytest.mark.parametrize("switch", ["1", "YES", "/run/elsewhere/zygote.sock"])
def test_the_image_zygote_runs_as_hermes_when_on(tmp_path: Path, fakes: Path, switch: str) -> None:
    env = {"FAKE_UID": "0", "HERMES_HOME": str(tmp_path), ZYGOTE_ENV: switch}
    run = image_script(tmp_path, fakes, "gateway-zygote/run", env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("dropped to hermes "), lines
    assert lines[1].startswith("hermes gateway zygote --notify-fd 3 "), lines
    assert "umask=0077" in lines[1]
    killed = image_script(tmp_path, fakes, "gateway-zygote/finish", env, "256", "9")
    assert killed.returncode == 0
    assert killed.stdout == "gateway-zygote: exited (code 256, signal 9); s6 restarts it\n"
