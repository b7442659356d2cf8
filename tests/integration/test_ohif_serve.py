"""The README's first command, ``make serve``: a private Orthanc in the workspace, filled with sample-data
(photographs, and its labels as SEGs), the app on it with the worklist and the lesion mode; stopping make stops
both, and the repository's files are as they were."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from apps.orthanc import OrthancMissing, dicomweb_plugin, orthanc_binary
from apps.process_control import port_in_use
from apps.research.local_server import free_port
from tests.support.paths import REPO
from tests.support.servers import NO_SCORING
from tests.support.viewers import need
from tests.support.waiting import answers, wait_for

pytestmark = pytest.mark.server


def repository_state() -> tuple[str, bool]:
    """What git sees changed or new in the repository, and whether its own workspace/ exists."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return status.stdout, (REPO / "workspace").exists()


def test_make_serve_fills_a_private_orthanc_and_stops_it(tmp_path: Path) -> None:
    if shutil.which("make") is None or shutil.which("git") is None or not (REPO / ".venv" / ".installed").exists():
        pytest.skip("make serve needs make, git and the repository's .venv (make venv)")
    try:
        orthanc_binary()
        dicomweb_plugin()
    except OrthancMissing as e:
        need(str(e))
    before = repository_state()
    port, orthanc_port = free_port(), free_port()
    workspace = tmp_path / "workspace"
    command = ["make", "-C", str(REPO), "serve", f"WORKSPACE={workspace}", f"PORT={port}"]
    command += [f"ORTHANC_PORT={orthanc_port}", "CONF=--conf models unet"]
    log = tmp_path / "make.log"
    env = {**os.environ, **NO_SCORING}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url), 240, f"make serve:\n{log.read_text()[-3000:]}", poll=0.5)
        rows = httpx.get(f"{url}/worklist.json", timeout=300).json()["rows"]
        labelled = sorted(p.stem for p in (REPO / "sample-data" / "labels" / "final").glob("*.png"))
        corrected = sorted(r["name"].rsplit(".", 1)[0] for r in rows if r["state"] == "corrected")
        assert len(rows) == 10 and corrected == labelled  # sample-data's labels arrived as SEGs
        assert {r["annotator"] for r in rows if r["state"] == "corrected"} == {"sample-data"}
        page = httpx.get(f"{url}/worklist", timeout=120).text
        assert 'href="/ohif/lesion?StudyInstanceUIDs=' in page
        assert (workspace / "orthanc" / "dicom_uids.csv").is_file()  # Orthanc's storage: in the workspace
    finally:
        process.send_signal(signal.SIGTERM)  # make forwards it; the program stops the app and Orthanc
        process.wait(90)
    wait_for(lambda: not port_in_use(orthanc_port) and not port_in_use(port), 30, "Orthanc or the app still listen")
    assert repository_state() == before
