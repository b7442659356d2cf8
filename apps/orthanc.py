"""Run Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb`` packages) as the app's DICOMweb server.

The configuration is ``apps/orthanc.json`` in this repository: DICOMweb at ``/dicom-web/``, no DICOM port, no
remote access (Orthanc 1.10 cannot bind to one address, so it refuses every client that is not on loopback),
storage in a folder of your choice. Debian's system service is not used; this is a private instance::

    lesion-orthanc --storage ~/orthanc-lesion --port 8042      # in the foreground; Ctrl-C or SIGTERM stops it
    monailabel start_server --app lesion_app --studies http://127.0.0.1:8042/dicom-web

``make serve`` runs the app with it in one program: ``--fill`` imports a folder's photographs and labels (as SEGs,
:mod:`apps.dicom_import`) when the storage holds no study yet, and the command after ``--`` runs against it
(``{dicomweb}`` in it becomes the DICOMweb URL); Orthanc stops when that command ends, and the command when
Orthanc fails::

    lesion-orthanc --storage workspace/orthanc --fill sample-data -- lesion-serve --studies {dicomweb}

Ctrl-C, SIGTERM and SIGHUP stop Orthanc, and so does the death of the program that started it (Linux). The storage
folder is locked (``lesion-orthanc.lock``) while an Orthanc serves it: a second start on it is refused, naming the
process that holds it. Tests start it with :func:`running_orthanc` and stop it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from apps.process_control import parent_death_signal, port_in_use, stop_process_tree, stoppable

CONFIG_TEMPLATE = Path(__file__).with_name("orthanc.json")
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
INSTALL_HINT = "install Debian's packages: apt-get install orthanc orthanc-dicomweb"
#: In the storage folder, locked while an Orthanc serves it; says which processes hold it.
LOCK_FILE = "lesion-orthanc.lock"


class OrthancMissing(RuntimeError):
    pass


class StorageBusy(RuntimeError):
    """The storage folder is in use by a running Orthanc (its lock is held)."""


class PortBusy(RuntimeError):
    """Something already listens on the port."""


def orthanc_binary() -> str:
    found = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if os.access(p, os.X_OK)), None)
    if not found:
        raise OrthancMissing(f"Orthanc is not installed; {INSTALL_HINT}")
    return found


def dicomweb_plugin() -> str:
    for folder in PLUGIN_DIRS:
        candidate = Path(folder) / DICOMWEB_PLUGIN
        if candidate.is_file():
            return str(candidate)
    raise OrthancMissing(f"Orthanc's DICOMweb plugin ({DICOMWEB_PLUGIN}) is not installed; {INSTALL_HINT}")


def write_config(storage: Path, port: int) -> Path:
    """The repository's configuration with this instance's storage folder, port and plugin filled in."""
    storage.mkdir(parents=True, exist_ok=True)
    text = (
        CONFIG_TEMPLATE.read_text()
        .replace("@STORAGE@", str(storage.resolve()))
        .replace("@PLUGINS@", dicomweb_plugin())
        .replace("@HTTP_PORT@", str(int(port)))
    )
    json.loads(text)  # a broken template fails here, not inside Orthanc
    config = storage / "orthanc.json"
    config.write_text(text)
    return config


def lock_storage(storage: Path) -> int:
    """Takes the storage folder's lock and returns its descriptor; Orthanc inherits it, so the lock lasts until
    both this process and Orthanc have ended. Raises :class:`StorageBusy` naming the holders."""
    storage.mkdir(parents=True, exist_ok=True)
    fd = os.open(storage / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "a process that has not said which"
        os.close(fd)
        raise StorageBusy(f"storage folder {storage} is in use by a running Orthanc: {holder}") from None
    return fd


def _note_holder(fd: int, orthanc_pid: int, port: int) -> None:
    """Writes who holds the lock (read by a refused second start)."""
    text = f"Orthanc pid {orthanc_pid} on port {port}, started by pid {os.getpid()} (stop it with: kill {os.getpid()})"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode() + b"\n", 0)


def last_error(storage: Path, pid: int) -> str:
    """The last error line of the log Orthanc (process ``pid``) wrote to ``storage``, or ""."""
    errors = [
        line.strip()
        for log in storage.glob(f"Orthanc.log.*.{pid}")
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("E")
    ]
    return errors[-1] if errors else ""


@dataclass
class Orthanc:
    process: subprocess.Popen
    port: int
    storage: Path
    lock: int  # descriptor of the storage folder's lock, closed by stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, SIGKILL after ``timeout`` seconds; then frees the storage folder."""
        try:
            stop_process_tree(self.process, timeout)
        finally:
            if self.lock >= 0:
                os.close(self.lock)
                self.lock = -1


def wait_until_up(url: str, process: subprocess.Popen | None = None, timeout: float = 30.0) -> dict:
    """Orthanc's ``/system`` answer once it serves, or an error with the reason."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {process.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{url}/system", timeout=2) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.2)
    raise TimeoutError(f"Orthanc did not answer at {url} within {timeout:.0f}s ({last})")


def start_orthanc(storage: Path, port: int = 8042, log: Path | None = None, timeout: float = 30.0) -> Orthanc:
    """Starts Orthanc on ``storage`` and waits until it serves; it gets SIGTERM if this process dies. Raises
    :class:`StorageBusy`, :class:`PortBusy`, :class:`OrthancMissing`, or RuntimeError/TimeoutError if it does not
    come up (stopped again then)."""
    storage = Path(storage)
    binary = orthanc_binary()
    lock = lock_storage(storage)
    try:
        if port_in_use(port):
            raise PortBusy(f"port {port} is already in use on this machine; choose another --port")
        config = write_config(storage, port)
        with open(log, "ab") if log else open(os.devnull, "wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [binary, "--logdir=" + str(storage.resolve()), str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(lock,),
                preexec_fn=parent_death_signal(),
            )
    except BaseException:
        os.close(lock)
        raise
    orthanc = Orthanc(process, port, storage, lock)
    try:
        _note_holder(lock, process.pid, port)
        wait_until_up(orthanc.url, process, timeout)
    except RuntimeError as e:
        orthanc.stop()
        reason = last_error(storage, process.pid)
        raise RuntimeError(f"{e}: {reason}" if reason else str(e)) from None
    except BaseException:
        orthanc.stop()
        raise
    return orthanc


@contextlib.contextmanager
def running_orthanc(storage: Path, port: int, log: Path | None = None) -> Iterator[Orthanc]:
    orthanc = start_orthanc(storage, port, log)
    try:
        yield orthanc
    finally:
        orthanc.stop()


def fill(orthanc: Orthanc, folder: Path) -> int:
    """Imports ``folder``'s photographs and their labels when Orthanc holds no study; returns how many."""
    from apps import dicom_import

    with urllib.request.urlopen(f"{orthanc.dicomweb}/studies?limit=1", timeout=30) as answer:
        if json.loads(answer.read() or b"[]"):
            return 0
    files = dicom_import.photographs([str(folder)])
    done = dicom_import.import_photographs(files, orthanc.dicomweb, progress=False, labels=True)
    dicom_import.write_mapping(orthanc.storage / "dicom_uids.csv", (asdict(d) for d in done))
    return len(done)


def run_with(orthanc: Orthanc, command: list[str]) -> int:
    """Runs ``command`` (``{dicomweb}`` replaced) until it or Orthanc ends; returns its exit status."""
    child = subprocess.Popen(
        [part.replace("{dicomweb}", orthanc.dicomweb) for part in command], preexec_fn=parent_death_signal()
    )
    try:
        while child.poll() is None:
            if orthanc.process.poll() is not None:
                print(f"error: Orthanc failed (log in {orthanc.storage}); stopping {command[0]}", file=sys.stderr)
                stop_process_tree(child)
                return 1
            time.sleep(0.5)
        return child.returncode
    finally:
        stop_process_tree(child)


@stoppable
def main(argv: list[str] | None = None) -> int:
    """Runs Orthanc (and the command after ``--``) until Ctrl-C, SIGTERM or SIGHUP, then stops it and returns 0;
    2 if it cannot start, 1 if it fails; with a command, that command's exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="lesion-orthanc", description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True, help="folder for Orthanc's database and DICOM files")
    p.add_argument("--port", type=int, default=8042, help="HTTP port on 127.0.0.1 (DICOMweb at /dicom-web)")
    p.add_argument("--fill", type=Path, help="a studies folder to import (photographs, labels as SEGs) if empty")
    args = p.parse_args(argv)
    try:
        orthanc = start_orthanc(Path(args.storage), args.port, Path(args.storage) / "orthanc.log")
    except (OrthancMissing, RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Orthanc {orthanc.url} (DICOMweb {orthanc.dicomweb}); storage {orthanc.storage}; Ctrl-C stops it")
    sys.stdout.flush()
    try:
        if args.fill:
            print(f"imported {fill(orthanc, args.fill)} photographs of {args.fill} (none if it held studies)")
            sys.stdout.flush()
        if command:
            return run_with(orthanc, command)
        while orthanc.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the normal end
        return 0
    finally:
        orthanc.stop()
    if orthanc.process.returncode == 0:  # shut down through its REST API, say
        return 0
    print(f"error: Orthanc failed (status {orthanc.process.returncode}; log in {orthanc.storage})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
