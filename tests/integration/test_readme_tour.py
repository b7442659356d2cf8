"""The README's five-minute tour, run as written against the server its first command starts.

The tour is the fenced block marked ```` ```bash tour ```` in README.md. Its commands run one by one in one bash
session (as typed into a terminal: a variable one command sets, the next one reads), in a temporary folder that
holds ``.venv`` and ``sample-data`` (links to the repository's) and the ``workspace/`` that ``make serve
WORKSPACE=...`` fills (a private Orthanc filled with sample-data, served over DICOMweb), with the README's address
replaced by that server's port. After each command the test checks
what the README tells a newcomer to expect: a photograph drawn, the upload listed, a mask back, a click that changes
it, the saved label listed as final, a training accepted and finishing, and a next photograph that has no label. The
server's background uncertainty scoring is off (``MONAI_LABEL_AUTO_UPDATE_SCORING=false``), as in the other server
tests, so that the tour's one-epoch training does not share the two cores with it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from apps.research.local_server import free_port
from tests.support.paths import REPO
from tests.support.servers import NO_SCORING
from tests.support.viewers import need
from tests.support.waiting import answers, wait_for

pytestmark = pytest.mark.server

README_URL = "http://127.0.0.1:8000"


def tour_commands(readme: str) -> list[str]:
    """The commands of the README's ```bash tour block, one string each (``\\``-continued lines joined)."""
    blocks = re.findall(r"^```bash tour\n(.*?)^```", readme, re.S | re.M)
    assert len(blocks) == 1, "README.md has one ```bash tour block"
    joined = re.sub(r"\s*\\\n\s*", " ", blocks[0])
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class Shell:
    """One bash session, like a terminal's: commands run one after another in it, and what they set stays set."""

    def __init__(self, folder: Path) -> None:
        self.errors = folder / "tour-stderr.log"
        with open(self.errors, "w") as errors:
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": errors}
            self.process = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=folder, text=True, **pipes)

    def run(self, command: str) -> str:
        """Runs ``command``; its standard output. Asserts that it exited 0 (a command that hangs meets pytest's
        timeout)."""
        marker = f"tour-command-done-{time.monotonic_ns()}"
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"{command}\necho; echo {marker} $?\n")
        self.process.stdin.flush()
        lines: list[str] = []
        while not (line := self.process.stdout.readline()).startswith(marker):
            assert line, f"{command}: bash ended\n{self.errors.read_text()[-2000:]}"
            lines.append(line)
        status = int(line.split()[1])
        assert status == 0, f"{command}: exit status {status}\n{self.errors.read_text()[-2000:]}"
        return "".join(lines)[:-1]  # without the newline echoed before the marker

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class Tour:
    """The server the tour runs against and what the tour has done so far."""

    url: str
    folder: Path  # the tour's working folder: .venv and sample-data (links) and workspace/
    shell: Shell
    photographs: int = 0  # how many the server listed before the tour
    done: list[str] = field(default_factory=list)  # the steps checked so far, in order
    uploaded: dict[str, Path] = field(default_factory=dict)  # image id -> the file uploaded
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # output file -> the mask it holds

    def run(self, command: str) -> str:
        """Runs one tour command against this server; its standard output."""
        return self.shell.run(command.replace(README_URL, self.url))

    def expand(self, word: str) -> str:
        """A word of a tour command as bash reads it in the tour's session (``$ID`` -> the id it holds)."""
        return self.shell.run(f'echo "{word}"').strip()


def option(command: str, name: str) -> str:
    """The value of a curl option (``-o``, ``-F``, ``-d``) in a tour command."""
    words = shlex.split(command)
    return words[words.index(name) + 1]


def query(command: str, key: str) -> str:
    match = re.search(rf"[?&]{key}=([^&\"' ]+)", command)
    assert match, f"no {key}= in {command}"
    return match.group(1)


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L", f"{path.name} is a single-channel PNG"
        mask = np.asarray(img)
    assert set(np.unique(mask)) <= {0, 1}, f"{path.name} holds 0 and 1 only"
    return mask


def photograph_shape(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.height, img.width


def check_drawn(tour: Tour, command: str, out: str) -> None:
    drawn = tour.folder / out.strip()
    assert photograph_shape(drawn)[0] > 0 and drawn.is_relative_to(tour.folder / "workspace"), out


def check_upload(tour: Tour, command: str, out: str) -> None:
    """The answer's id (kept in a shell variable by the tour) names the uploaded photograph, which is listed."""
    variable = re.match(r"(\w+)=\$\(", command)
    answer = tour.run(f'echo "${variable.group(1)}"').strip() if variable else json.loads(out)["image"]
    assert answer and photographs(tour) == tour.photographs + 1, "the upload is listed"
    tour.uploaded[answer] = tour.folder / option(command, "-F").removeprefix("file=@")


def check_echo(tour: Tour, command: str, out: str) -> None:
    assert out.strip() in tour.uploaded, out


def check_infer(tour: Tour, command: str, out: str) -> None:
    image_id, target = tour.expand(query(command, "image")), tour.folder / option(command, "-o")
    mask = read_mask(target)
    assert mask.shape == photograph_shape(tour.uploaded[image_id])
    assert mask.any(), "the lesion is found"
    if "/infer/deepedit" in command:
        clicks = json.loads(option(command, "-F").removeprefix("params="))
        for column, row, _ in clicks["foreground"]:
            assert mask[row, column] == 1, "a positive click is lesion in the answer"
        assert tour.masks and not any(np.array_equal(mask, m) for m in tour.masks.values()), "the click changed it"
    tour.masks[str(target)] = mask


def check_save(tour: Tour, command: str, out: str) -> None:
    image_id, sent = tour.expand(query(command, "image")), tour.folder / option(command, "-F").removeprefix("label=@")
    assert json.loads(out)["image"] == image_id
    stored = httpx.get(f"{tour.url}/datastore/label", params={"label": image_id, "tag": "final"}, timeout=30)
    assert stored.status_code == 200, stored.text
    with Image.open(io.BytesIO(stored.content)) as img:
        assert np.array_equal(np.asarray(img), read_mask(sent)), "the server gives back the label saved"
    assert "final" in datastore(tour)[image_id]["labels"]


def check_training_list(tour: Tour, command: str, out: str) -> None:
    pairs = {Path(p["image"]).stem: Path(p["label"]) for p in json.loads(out)}
    assert tour.uploaded and all(pairs[i].parts[-2:] == ("final", f"{i}.png") for i in tour.uploaded), pairs
    labelled = [i for i, entry in datastore(tour).items() if "final" in entry["labels"]]
    assert sorted(pairs) == sorted(labelled)


def check_train(tour: Tour, command: str, out: str) -> None:
    assert json.loads(out)["status"] in ("SUBMITTED", "RUNNING"), out


def check_train_status(tour: Tour, command: str, out: str) -> None:
    """Asks again, as the README says, until the training has finished; it finished DONE, one line per epoch."""

    def finished() -> dict[str, Any] | None:
        status = json.loads(tour.run(command))
        return status if status["status"] not in ("SUBMITTED", "RUNNING") else None

    status = wait_for(finished, 180, "the tour's training", poll=1)
    details = "\n".join(status["details"])
    assert status["status"] == "DONE", details[-2000:]
    assert "epoch 1/1" in details and "val_iou" in details


def check_next(tour: Tour, command: str, out: str) -> None:
    image_id = json.loads(out)["id"]
    assert image_id in datastore(tour), out
    assert "final" not in datastore(tour)[image_id]["labels"], "the next photograph has no label"


def photographs(tour: Tour) -> int:
    """How many photographs the server lists (a DICOMweb server's: every series on it)."""
    return httpx.get(f"{tour.url}/datastore/", params={"output": "stats"}, timeout=30).json()["total"]


def datastore(tour: Tour) -> dict[str, Any]:
    """Every photograph the server lists: id -> its entry (``labels`` by tag)."""
    return httpx.get(f"{tour.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]


#: each kind of step in the tour: what its command looks like, and its check
STEPS: dict[str, tuple[str, Callable[[Tour, str, str], None]]] = {
    "draw": (r"lesion-make-sample-data ", check_drawn),
    "upload": (r"-X PUT \S*/datastore/image\?", check_upload),
    "show the id": (r"^echo ", check_echo),
    "segment": (r"-X POST \S*/infer/(?!deepedit)\w+\?", check_infer),
    "correct": (r"-X POST \S*/infer/deepedit\?", check_infer),
    "save": (r"-X PUT \S*/datastore/label\?.*tag=final", check_save),
    "training list": (r"/datastore/\?output=train", check_training_list),
    "train": (r"-X POST \S*/train/\w+", check_train),
    "train status": (r"/train/\?", check_train_status),
    "next": (r"-X POST \S*/activelearning/\w+", check_next),
}


def step_of(command: str) -> str:
    kinds = [kind for kind, (pattern, _) in STEPS.items() if re.search(pattern, command)]
    assert len(kinds) == 1, f"the test knows no check for this tour command: {command}"
    return kinds[0]


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    """``make serve`` on a free port with its workspace in a temporary folder, as the README's first command."""
    if shutil.which("make") is None or shutil.which("curl") is None:
        pytest.skip("the tour needs make and curl")
    if not (REPO / ".venv" / ".installed").exists():
        pytest.skip("make serve needs the repository's .venv (make venv)")
    if shutil.which("Orthanc") is None or not (REPO / "viewer/node_modules/@ohif/app/dist/index.html").is_file():
        need("make serve would first install Orthanc and OHIF (make viewers)")
    folder = tmp_path_factory.mktemp("tour")
    for name in (".venv", "sample-data"):
        (folder / name).symlink_to(REPO / name)
    port = free_port()
    log = folder / "make.log"
    command = ["make", "-C", str(REPO), "serve", f"WORKSPACE={folder / 'workspace'}", f"PORT={port}"]
    command.append(f"ORTHANC_PORT={free_port()}")  # a private Orthanc filled with sample-data, as the README's
    with open(log, "w") as out:
        env = {**os.environ, **NO_SCORING}
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url), 180, f"make serve:\n{log.read_text()[-2000:]}", poll=0.5)
        shell = Shell(folder)
        try:
            tour = Tour(url, folder, shell)
            tour.photographs = photographs(tour)
            yield tour
        finally:
            shell.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def test_the_readme_tour_runs_as_written(tour: Tour) -> None:
    commands = tour_commands((REPO / "README.md").read_text())
    for command in commands:
        kind = step_of(command)
        out = tour.run(command)
        STEPS[kind][1](tour, command, out)
        tour.done.append(kind)
    order = ["upload", "segment", "correct", "save", "train", "train status", "next"]
    assert [kind for kind in tour.done if kind in order] == order, tour.done


def test_the_tour_block_is_read_as_commands() -> None:
    readme = "text\n```bash tour\n# a comment\ncurl -X PUT a \\\n     -F b\n\ncurl c  # why\n```\n"
    readme += "```bash\nnot this\n```\n"
    assert tour_commands(readme) == ["curl -X PUT a -F b", "curl c  # why"]
