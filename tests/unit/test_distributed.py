"""Data-parallel training under torchrun: two CPU processes on gloo, the same ``loop.fit`` as the server.

Run as a module (``torchrun -m tests.unit.test_distributed DATA OUT``) this file is also the probe that
``test_ranks_stay_in_lockstep`` launches: each rank calls ``fit`` with its own skewed clock and records what
it saw, so the test can check that rank 0's decisions reached every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lesion_app.core.checkpoint import load_model, network_spec
from lesion_app.core.networks import build_network
from lesion_app.core.training import distributed, loop
from tests.support.images import draw_studies

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def drawn_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight drawn photographs with masks in the images/ + masks/ layout (6 train, 2 val after the split)."""
    return draw_studies(tmp_path_factory.mktemp("studies"), 8, seed=7)


def torchrun(args: list[str], log_dir: Path) -> subprocess.CompletedProcess[str]:
    """Two CPU processes; ``--tee`` prefixes every line with its rank (``[default0]:``) to tell who wrote it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["--log-dir", str(log_dir), "--tee", "3", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WORLD_SIZE", None)
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()  # torchrun passes it on to its workers (each in a session of its own) and waits
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def rank_lines(text: str, rank: int) -> list[str]:
    prefix = f"[default{rank}]:"
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


def test_torchrun_trains_publishes_once_and_resumes(drawn_studies: Path, tmp_path: Path) -> None:
    out, log, ck = tmp_path / "m.pt", tmp_path / "log.jsonl", tmp_path / "state.pt"
    args = ["-m", "apps.train", str(drawn_studies), "--arch", "unet", "--batch-size", "2", "--limit", "8"]
    # --jsonl is --log: torchrun's own parser takes --log for an abbreviation of its --log-dir
    args += ["--spatial-size", "64", "--out", str(out), "--jsonl", str(log), "--checkpoint", str(ck)]
    run = torchrun([*args, "--epochs", "2", "--progress"], tmp_path / "tee1")
    assert run.returncode == 0, run.stderr[-3000:]
    rank0, rank1 = rank_lines(run.stdout, 0), rank_lines(run.stdout, 1)
    assert any("world size 2" in line for line in rank0), run.stdout
    assert [line.split()[:2] for line in rank0 if line.startswith("epoch")] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert rank1 == [], "only rank 0 prints"
    # the progress display: rank 0 only, one line at each epoch's last batch (stderr is not a terminal here)
    progress = [line for line in run.stderr.splitlines() if "images/s" in line]
    assert len(progress) == 2 and all(line.startswith("[default0]:batch 1/1 ") for line in progress), progress

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2], "one log line per epoch, not one per rank"
    assert all(h["extra"] == {"world_size": 2} for h in lines)
    network, meta = load_model(out)
    assert meta["epoch"] == max(lines, key=lambda h: h["val"]["iou"])["epoch"]
    assert meta["fit"]["spatial_size"] == [64, 64]
    assert sum(p.numel() for p in network.parameters()) > 0
    assert torch.load(ck, map_location="cpu", weights_only=False)["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files are left behind"

    # a second launch asked for 3 epochs resumes from the checkpoint and trains only the third
    again = torchrun([*args, "--epochs", "3"], tmp_path / "tee2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [line.split()[1] for line in rank_lines(again.stdout, 0) if line.startswith("epoch")] == ["3/3"]
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert torch.load(ck, map_location="cpu", weights_only=False)["epoch"] == 3
    assert not [line for line in again.stderr.splitlines() if "images/s" in line], "no progress unless asked"


def test_ranks_stay_in_lockstep(drawn_studies: Path, tmp_path: Path) -> None:
    """Rank 1's clock says its time budget ran out at once; rank 0's allows two epochs. Both train two."""
    run = torchrun(["-m", "tests.unit.test_distributed", str(drawn_studies), str(tmp_path)], tmp_path / "tee")
    assert run.returncode == 0, run.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [h["epoch"] for h in seen[0]["history"]] == [1, 2], "stopped by rank 0's budget, before max_epochs 10"
    assert seen[0]["history"] == seen[1]["history"], "same epochs, averaged loss, validation, lr and best epoch"
    assert seen[0]["reported"] == 2 and seen[1]["reported"] == 0, "only rank 0 reports"
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # DDP keeps the parameters identical; batch-norm running statistics stay per rank (rank 0's are published)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), "parameters differ between ranks"
    assert (tmp_path / "model.pt").exists()


def _probe(data: Path, out: Path) -> None:
    """One rank of ``test_ranks_stay_in_lockstep``: fit with a fake clock, then write what this rank saw."""
    device = distributed.init_distributed("cpu")
    rank = torch.distributed.get_rank()
    # fit reads the clock at the start, at each epoch's start and end: rank 0 sees 0.2 min per read (a
    # 1-minute budget lasts two epochs), rank 1 ten minutes per read (alone, it would stop before epoch 1)
    step, clock = (0.2 if rank == 0 else 10.0) * 60, [0.0]

    def monotonic() -> float:
        clock[0] += step
        return clock[0]

    loop.time = SimpleNamespace(monotonic=monotonic)  # type: ignore[assignment]
    items = [{"image": str(p), "label": str(data / "masks" / f"{p.stem}.png")} for p in sorted(data.glob("images/*"))]
    cfg = loop.FitConfig(max_epochs=10, max_minutes=1.0, batch_size=2, spatial_size=(64, 64), device=device)
    reported: list[loop.EpochStats] = []
    network = build_network("unet")
    try:
        run = loop.TrainingRun(network, network_spec("unet"), items, items[:2], out / "model.pt")
        history = loop.fit(run, cfg, loop.Hooks(on_epoch=reported.append))
        summary = {"history": [asdict(h) for h in history], "reported": len(reported)}
        (out / f"rank{rank}.json").write_text(json.dumps(summary))
        torch.save({k: p.detach() for k, p in network.named_parameters()}, out / f"rank{rank}.pt")
    finally:
        distributed.destroy_distributed()


if __name__ == "__main__":
    _probe(Path(sys.argv[1]), Path(sys.argv[2]))
