"""A command that is stopped stops what it started (issue 18).

Each long-running program is started as a subprocess (in its own session, as a service manager starts it) on a
free loopback port; once it serves, its process and everything it started are listed, it gets SIGTERM or SIGHUP
(to its pid only, as ``kill PID`` sends it; ``make`` also to its process group, and SIGKILL), and then it must
have exited, with none of those processes left and the port free. The programs run this repository's code
(``PYTHONPATH``), whatever the virtual environment holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from apps import ohif_browser
from apps.orthanc import Orthanc, OrthancMissing, dicomweb_plugin, lock_storage, orthanc_binary
from apps.process_control import descendants, port_in_use, stop_processes, wait_gone
from apps.research.load import is_train_process
from apps.research.local_server import Server, free_port, server_process
from tests.support.paths import REPO, SAMPLE_DATA
from tests.support.servers import NO_SCORING
from tests.support.viewers import need

pytestmark = pytest.mark.server

ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    **NO_SCORING,
}
SERVE_CONF = ["--conf", "models", "unet", "--conf", "threads", "1"]
STOP_SIGNALS = [signal.SIGTERM, signal.SIGHUP]
#: How long a stopped program may take to stop what it started (a server's graceful shutdown included).
STOP_TIMEOUT = 30.0
#: What lesion-orthanc prints once it serves (before, a signal stops its start-up: exit status 128 + signal).
ORTHANC_READY = "Ctrl-C stops it"


@pytest.fixture
def orthanc_installed() -> None:
    try:
        orthanc_binary()
        dicomweb_plugin()
    except OrthancMissing as e:
        need(str(e))


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return ohif_browser.chromium_binary()
    except ohif_browser.ChromiumMissing as e:
        need(str(e))


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts commands in their own sessions, output in ``tmp_path/<name>.log``; stops whatever of them is left at
    the end, so that a failing test leaves nothing behind."""
    started: list[subprocess.Popen] = []

    def start(cmd: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env={**ENV, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        left = descendants(proc.pid) + ([psutil.Process(proc.pid)] if proc.poll() is None else [])
        stop_processes(left, timeout=5)
        proc.wait()


def log_of(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]


def wait_until_serving(url: str, proc: subprocess.Popen, ready: str = "", timeout: float = 120.0) -> None:
    """Until ``url`` answers 200 and the command has printed ``ready``; fails with the command's output if it
    exits or never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log_of(proc)}"
        try:
            if httpx.get(url, timeout=2).status_code == 200 and ready in log_of(proc):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s:\n{log_of(proc)}")


def wait_for_descendant(
    proc: subprocess.Popen, match: Callable[[psutil.Process], bool], timeout: float = 60.0
) -> psutil.Process:
    """The first process under ``proc`` that ``match`` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log_of(proc)}"
        for p in descendants(proc.pid):
            try:
                if match(p):
                    return p
            except psutil.Error:
                continue
        time.sleep(0.2)
    pytest.fail(f"no such process under {proc.args} within {timeout:.0f}s:\n{log_of(proc)}")


def listening_port(process: psutil.Process) -> int | None:
    ports = [c.laddr.port for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    return ports[0] if ports else None


def stop_and_check(
    proc: subprocess.Popen, signum: int, port: int | None = None, *, group: bool = False
) -> tuple[int, float]:
    """Lists everything ``proc`` started, sends it ``signum`` (to its process group with ``group``, as a terminal
    hang-up does) and asserts that it exits, none of them is left and ``port`` is free. Returns its exit status
    and the seconds it took."""
    tree = [psutil.Process(proc.pid), *descendants(proc.pid)]
    assert len(tree) > 1, "the command has started nothing"
    t0 = time.monotonic()
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    try:
        status = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{signal.Signals(signum).name} did not stop {proc.args}:\n{log_of(proc)}")
    left = wait_gone(tree, STOP_TIMEOUT)
    names = [p.cmdline() for p in left]
    stop_processes(left, timeout=5)  # a failing test leaves nothing behind either
    assert not left, f"left running after {signal.Signals(signum).name}: {names}"
    if port is not None:
        assert not port_in_use(port), f"port {port} is still taken"
    return status, time.monotonic() - t0


def orthanc_cmd(storage: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "apps.orthanc", "--storage", str(storage), "--port", str(port)]


def make_cmd(target: str, **variables: str) -> list[str]:
    """``make`` in this repository with the virtual environment that runs the tests: ``-o`` keeps make from
    (re)installing it, which a checkout newer than its ``.installed`` stamp would otherwise trigger."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("make's targets run from a virtual environment; these tests do not run in one")
    venv = sys.prefix
    return [
        "make",
        "-s",
        "-C",
        str(REPO),
        "-o",
        f"{venv}/.installed",
        target,
        f"VENV={venv}",
        *[f"{k}={v}" for k, v in variables.items()],
    ]


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_orthanc_stops_its_orthanc(orthanc_installed: None, launch: Callable, tmp_path: Path, signum: int) -> None:
    port, storage = free_port(), tmp_path / "orthanc storage"
    proc = launch(orthanc_cmd(storage, port), "lesion-orthanc")
    wait_until_serving(f"http://127.0.0.1:{port}/system", proc, ORTHANC_READY)
    status, seconds = stop_and_check(proc, signum, port)
    assert status == 0, log_of(proc)
    os.close(lock_storage(storage))  # the storage folder is free again
    print(f"lesion-orthanc stopped by {signal.Signals(signum).name} in {seconds:.1f}s")


def test_a_second_orthanc_on_a_busy_storage_or_port_is_refused(
    orthanc_installed: None, launch: Callable, tmp_path: Path
) -> None:
    port, storage = free_port(), tmp_path / "orthanc storage"
    first = launch(orthanc_cmd(storage, port), "first")
    wait_until_serving(f"http://127.0.0.1:{port}/system", first, ORTHANC_READY)
    config = (storage / "orthanc.json").read_text()

    second = subprocess.run(orthanc_cmd(storage, free_port()), env=ENV, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert f"storage folder {storage} is in use by a running Orthanc" in second.stderr
    assert f"started by pid {first.pid}" in second.stderr and f"kill {first.pid}" in second.stderr
    assert (storage / "orthanc.json").read_text() == config  # the running one's configuration is untouched

    other = subprocess.run(orthanc_cmd(tmp_path / "other", port), env=ENV, capture_output=True, text=True, timeout=60)
    assert other.returncode == 2
    assert f"port {port} is already in use" in other.stderr
    os.close(lock_storage(tmp_path / "other"))  # the refused start gave up the lock it took

    assert httpx.get(f"http://127.0.0.1:{port}/system", timeout=5).status_code == 200  # the first still serves
    stop_and_check(first, signal.SIGTERM, port)


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_serve_stops_the_server_and_its_training(launch: Callable, tmp_path: Path, signum: int) -> None:
    port, studies = free_port(), tmp_path / "studies"
    shutil.copytree(SAMPLE_DATA, studies)
    cmd = [sys.executable, "-m", "apps.serve", "--studies", str(studies), "--port", str(port), *SERVE_CONF]
    proc = launch([*cmd, "--conf", "model_dir", str(tmp_path / "models")], "lesion-serve")
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/info/", proc)
    httpx.post(f"{url}/train/unet", json={"max_epochs": 100}, timeout=60).raise_for_status()
    wait_for_descendant(proc, is_train_process)
    status, seconds = stop_and_check(proc, signum, port)
    assert status == 0, log_of(proc)
    print(f"lesion-serve (training) stopped by {signal.Signals(signum).name} in {seconds:.1f}s")


#: How make is stopped: SIGTERM to make (it forwards SIGTERM to its recipe, which ``exec``s the program); SIGHUP
#: to its process group, as a terminal hang-up sends it (make itself forwards no SIGHUP: it waits for its
#: children); SIGKILL to make (the program stops because its parent died: ``LESION_STOP_WITH_PARENT``).
MAKE_STOPS = [(signal.SIGTERM, False), (signal.SIGHUP, True), (signal.SIGKILL, False)]


def make_stop_id(case: tuple[int, bool]) -> str:
    return signal.Signals(case[0]).name + ("-group" if case[1] else "")


@pytest.mark.parametrize("how", MAKE_STOPS[::2], ids=make_stop_id)
def test_make_serve_stops_the_server(launch: Callable, tmp_path: Path, how: tuple[int, bool]) -> None:
    port = free_port()
    variables = {"WORKSPACE": str(tmp_path / "workspace"), "PORT": str(port), "CONF": " ".join(SERVE_CONF)}
    variables["STUDIES"] = str(tmp_path / "workspace" / "sample-data")  # a folder: make serve alone starts Orthanc
    proc = launch(make_cmd("serve", **variables), "make-serve")
    wait_until_serving(f"http://127.0.0.1:{port}/info/", proc)
    _, seconds = stop_and_check(proc, how[0], port, group=how[1])
    print(f"make serve stopped by {make_stop_id(how)} in {seconds:.1f}s")


@pytest.mark.parametrize("how", MAKE_STOPS, ids=make_stop_id)
def test_make_orthanc_stops_orthanc(
    orthanc_installed: None, launch: Callable, tmp_path: Path, how: tuple[int, bool]
) -> None:
    port, storage = free_port(), tmp_path / "orthanc storage"
    proc = launch(make_cmd("orthanc", ORTHANC_STORAGE=str(storage), ORTHANC_PORT=str(port)), "make-orthanc")
    wait_until_serving(f"http://127.0.0.1:{port}/system", proc, ORTHANC_READY)
    _, seconds = stop_and_check(proc, how[0], port, group=how[1])
    os.close(lock_storage(storage))
    print(f"make orthanc stopped by {make_stop_id(how)} in {seconds:.1f}s")


SERVER_PROGRAMS = {
    "lesion-load --start": (["apps.research.load", "--start", "--clients", "2", "--requests", "99999"], signal.SIGTERM),
    "benchmark_server": (["apps.research.benchmark_server", "--requests", "99999", "--models", "unet"], signal.SIGHUP),
}


@pytest.mark.parametrize("name", SERVER_PROGRAMS)
def test_a_program_that_starts_a_server_stops_it(launch: Callable, name: str) -> None:
    args, signum = SERVER_PROGRAMS[name]
    proc = launch([sys.executable, "-m", *args], name.split()[0])
    server = wait_for_descendant(proc, lambda p: "monailabel.main" in p.cmdline() and listening_port(p) is not None)
    port, workdir = listening_port(server), Path(server.cwd())
    wait_until_serving(f"http://127.0.0.1:{port}/info/", proc)
    time.sleep(2)  # requests are being sent
    status, seconds = stop_and_check(proc, signum, port)
    assert status == 128 + signum and f"stopped by {signal.Signals(signum).name}" in log_of(proc)
    assert not workdir.exists()  # its temporary copy of sample-data is gone too
    print(f"{name} stopped by {signal.Signals(signum).name} in {seconds:.1f}s")


@pytest.fixture(scope="module")
def ohif_server(orthanc: Orthanc, dicom_studies: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = NO_SCORING
    conf = {"models": "unet", "threads": "1"}
    with server_process(tmp_path_factory.mktemp("signals"), conf, env=env, studies_url=orthanc.dicomweb) as s:
        yield s


def test_ohif_screenshot_closes_its_browser(
    chromium: str, ohif_server: Server, dicom_studies: dict, launch: Callable, tmp_path: Path
) -> None:
    study = dicom_studies["lesion_000.jpg"]["study_uid"]
    out = tmp_path / "ohif.png"
    proc = launch([sys.executable, "-m", "apps.ohif", ohif_server.url, "--study", study, "--out", str(out)], "ohif")
    wait_for_descendant(proc, lambda p: "chrom" in p.name().lower())
    time.sleep(2)  # the page is loading
    status, seconds = stop_and_check(proc, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM and "stopped by SIGTERM" in log_of(proc)
    assert httpx.get(f"{ohif_server.url}/info/", timeout=10).status_code == 200  # the server it used is untouched
    print(f"lesion-ohif-screenshot stopped by SIGTERM in {seconds:.1f}s")


HARNESS_TEST = """
import os, time
from apps.orthanc import running_orthanc

def test_holds_an_orthanc(tmp_path):
    with running_orthanc(tmp_path, int(os.environ["HARNESS_PORT"])):
        time.sleep(300)
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "two workers, as make test"])
def test_a_stopped_test_run_stops_its_orthanc(
    orthanc_installed: None, launch: Callable, tmp_path: Path, workers: list[str]
) -> None:
    """pytest (with tests/conftest.py) stopped by SIGTERM tears its fixtures down as after Ctrl-C, with pytest-xdist's
    workers too (`make test` runs two)."""
    port, test = free_port(), tmp_path / "test_harness.py"
    test.write_text(HARNESS_TEST)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", *workers, str(test)]
    cmd += ["--rootdir", str(tmp_path), "-c", os.devnull]
    proc = launch(cmd, "pytest", {"HARNESS_PORT": str(port)})
    wait_until_serving(f"http://127.0.0.1:{port}/system", proc)
    status, seconds = stop_and_check(proc, signal.SIGTERM, port)
    assert status == 2 and "Stopped: SIGTERM" in log_of(proc)  # pytest's "interrupted"
    print(f"pytest stopped by SIGTERM in {seconds:.1f}s")
