"""Run Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb`` packages) as the app's DICOMweb server.

The configuration is ``apps/orthanc.json`` in this repository: DICOMweb at ``/dicom-web/``, no DICOM port, no
remote access (Orthanc 1.10 cannot bind to one address, so it refuses every client that is not on loopback),
storage in a folder of your choice. Debian's system service is not used; this is a private instance::

    lesion-orthanc --storage ~/orthanc-lesion --port 8042      # in the foreground; Ctrl-C stops it
    monailabel start_server --app lesion_app --studies http://127.0.0.1:8042/dicom-web

Tests start it with :func:`running_orthanc` and stop it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONFIG_TEMPLATE = Path(__file__).with_name("orthanc.json")
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
INSTALL_HINT = "install Debian's packages: apt-get install orthanc orthanc-dicomweb"


class OrthancMissing(RuntimeError):
    pass


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


@dataclass
class Orthanc:
    process: subprocess.Popen
    port: int
    storage: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
    config = write_config(Path(storage), port)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [orthanc_binary(), "--logdir=" + str(Path(storage).resolve()), str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    orthanc = Orthanc(process, port, Path(storage))
    try:
        wait_until_up(orthanc.url, process, timeout)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-orthanc", description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True, help="folder for Orthanc's database and DICOM files")
    p.add_argument("--port", type=int, default=8042, help="HTTP port on 127.0.0.1 (DICOMweb at /dicom-web)")
    args = p.parse_args(argv)
    try:
        orthanc = start_orthanc(Path(args.storage), args.port, Path(args.storage) / "orthanc.log")
    except (OrthancMissing, RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Orthanc {orthanc.url} (DICOMweb {orthanc.dicomweb}); storage {orthanc.storage}; Ctrl-C stops it")
    try:
        while orthanc.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        orthanc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
