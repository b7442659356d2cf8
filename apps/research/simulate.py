"""Simulate the annotation loop on a labelled pool: how fast does each next-image strategy learn?

From a small seed set, each round fine-tunes the model on the labels so far (as the server's train task
does, from the model it serves), scores validation IoU, then picks the next ``--step`` images with the
strategy and reveals their ground truth, as the annotator would. Every strategy starts from the same
seed set and network initialisation, with the same budget. A model trained on the whole pool gives the
reference line (and 95% of it, the target).

Example::

    lesion-simulate ../shared/data/isic --pool 400 --val 100 --seed-labels 20 --step 20 --rounds 5 \\
        --strategies random uncertainty --seeds 0 1 --out runs/simulation
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose
from PIL import Image
from scipy.stats import spearmanr

from apps.research.simulation_results import Results, Round, markdown, plot, verdicts, write_csv
from lesion_app.core.checkpoint import load_model, network_spec, read_checkpoint
from lesion_app.core.data import split
from lesion_app.core.metrics import iou
from lesion_app.core.networks import build_network
from lesion_app.core.predictor import Predictor, prepare
from lesion_app.core.selection import (
    density_weighted_top,
    diverse_sample,
    power_sample,
    typical_sample,
)
from lesion_app.core.training.gate import PUBLISHED, decide
from lesion_app.core.training.loop import FitConfig, TrainingRun, fit, validate
from lesion_app.core.transforms import load_transforms, preprocess_transforms, val_transforms
from lesion_app.core.uncertainty import METHODS, image_scores, sample_probabilities
from lesion_app.io.images import read_mask
from lesion_app.io.layout import find_pairs
from lesion_app.lib.settings import LesionSettings

Item = dict[str, str]

#: How uncertainty is sampled unless told otherwise: as the server does by default.
SERVER_METHOD = LesionSettings.uncertainty_method


def cache_items(items: Sequence[Item], size: int, folder: Path) -> list[Item]:
    """Each pair resized once to the network's input and stored as PNG, so rounds do not decode big JPEGs."""
    xf = Compose(load_transforms() + preprocess_transforms((size, size)))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    out = []
    for i, item in enumerate(items, 1):
        d = xf({"image": item["image"], "label": item["label"]})
        img = (np.asarray(d["image"]).transpose(1, 2, 0) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        image_path, mask_path = folder / "images" / f"{item['id']}.png", folder / "masks" / f"{item['id']}.png"
        Image.fromarray(img).save(image_path)
        Image.fromarray((np.asarray(d["label"])[0] > 0.5).astype(np.uint8) * 255).save(mask_path)
        out.append({"id": item["id"], "image": str(image_path), "label": str(mask_path)})
        if i % 100 == 0 or i == len(items):
            print(f"  cached {i}/{len(items)} images at {size}x{size}", file=sys.stderr, flush=True)
    return out


def embedding_layer(network: torch.nn.Module) -> torch.nn.Module:
    """The deepest encoder stage (U-Net, DeepLabV3), else the layer the head's dropout reads."""
    encoders = getattr(network, "encoders", None)
    if isinstance(encoders, torch.nn.ModuleList):
        return encoders[-1]
    encoder = getattr(network, "encoder", None)
    if isinstance(encoder, torch.nn.Module):
        return encoder
    (layer,) = [m for m in network.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    return layer


def uncertainty_and_embeddings(
    network: torch.nn.Module,
    items: Sequence[Item],
    samples: int,
    size: int,
    method: str = SERVER_METHOD,
    with_scores: bool = True,
) -> tuple[list[float], np.ndarray]:
    """Per image, the server's uncertainty score (mask disagreement of the ``method``'s samples: Monte Carlo
    dropout or the four flips, as ``--conf uncertainty_method``) and the network's deepest features averaged
    over the image (a cheap embedding the model already computes). ``with_scores=False``: the embeddings
    alone, from one plain forward pass per image, and no scores."""
    layer = embedding_layer(network)
    seen: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        features = args[0] if isinstance(module, torch.nn.modules.dropout._DropoutNd) else output
        seen.append(features[:1].flatten(2).mean(2)[0].float().clone())

    scores, embeddings = [], []
    handle = layer.register_forward_hook(keep)
    try:
        for item in items:
            seen.clear()
            image = prepare(item["image"], (size, size)).image
            if with_scores:
                probs = sample_probabilities(network, image, method, samples).numpy()
                scores.append(image_scores(probs)["disagreement"])
            else:
                with torch.inference_mode():
                    network.eval()(image[None].float())
            embeddings.append(seen[0].numpy())
    finally:
        handle.remove()
    return scores, np.stack(embeddings) if embeddings else np.zeros((0, 0), np.float32)


def uncertainty_ranking(
    network: torch.nn.Module, items: Sequence[Item], samples: int, size: int, method: str = SERVER_METHOD
) -> list[float]:
    """Mask disagreement of the samples per image (the server's uncertainty score)."""
    return uncertainty_and_embeddings(network, items, samples, size, method)[0]


def score_tracks_error(network: torch.nn.Module, items: Sequence[Item], samples: int, size: int) -> dict[str, float]:
    """Rank correlation (Spearman) between each method's uncertainty score and the network's per-image error
    (1 - IoU) over labelled items: how well the score finds the photographs the model gets wrong."""
    predictor = Predictor([network], (size, size), postprocess=False)
    errors = [1.0 - iou(predictor.mask(item["image"]), read_mask(item["label"])) for item in items]
    return {
        method: float(spearmanr(uncertainty_ranking(network, items, samples, size, method), errors).statistic)
        for method in METHODS
    }


STRATEGIES = ("random", "uncertainty", "power", "diverse", "density", "typical", "typical-uncertain")


def pick(
    strategy: str,
    network: torch.nn.Module,
    unlabelled: list[Item],
    k: int,
    rng: random.Random,
    samples: int,
    size: int,
    beta: float = 1.0,
    method: str = SERVER_METHOD,
    labelled: Sequence[Item] = (),
) -> list[Item]:
    """The next ``k`` images: ``random``; ``uncertainty`` (top-k scores); ``power`` (drawn with probability
    proportional to score ** beta); ``diverse`` (one typical image per region of the embedding space,
    regions weighted by score ** beta); ``density`` (top-k of score * information density ** beta);
    ``typical`` (TypiClust: the most typical image of each region the ``labelled`` ones do not cover yet);
    ``typical-uncertain`` (the same regions, their most uncertain image). See
    ``lesion_app.core.selection``."""
    if strategy == "random":
        return rng.sample(unlabelled, min(k, len(unlabelled)))
    if strategy in ("typical", "typical-uncertain"):
        uncertain = strategy == "typical-uncertain"
        scores, embeddings = uncertainty_and_embeddings(network, unlabelled, samples, size, method, uncertain)
        if labelled:  # they shape the clusters but are never picked: their embeddings alone
            known = uncertainty_and_embeddings(network, labelled, samples, size, method, with_scores=False)[1]
            embeddings = np.concatenate([known, embeddings])
        generator = np.random.default_rng(rng.getrandbits(64))
        everything_scores = [0.0] * len(labelled) + scores if uncertain else None
        chosen = typical_sample(embeddings, k, generator, range(len(labelled)), everything_scores)
        return [unlabelled[i - len(labelled)] for i in chosen]
    if strategy == "uncertainty":
        scores = uncertainty_ranking(network, unlabelled, samples, size, method)
        order = sorted(range(len(unlabelled)), key=lambda i: -scores[i])
        return [unlabelled[i] for i in order[:k]]
    if strategy in ("power", "diverse", "density"):
        scores, embeddings = uncertainty_and_embeddings(network, unlabelled, samples, size, method)
        if strategy == "density":
            return [unlabelled[i] for i in density_weighted_top(scores, embeddings, k, beta)]
        generator = np.random.default_rng(rng.getrandbits(64))
        if strategy == "power":
            chosen = power_sample(scores, k, generator, beta)
        else:
            chosen = diverse_sample(scores, embeddings, k, generator, beta)
        return [unlabelled[i] for i in chosen]
    raise ValueError(f"unknown strategy {strategy!r}")


def train_round(
    network: torch.nn.Module,
    arch: str,
    labelled: list[Item],
    val: list[Item],
    cfg: FitConfig,
    work: Path,
    epoch_size: int = 0,
    baseline: dict[str, float] | None = None,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Fine-tunes on the labels so far, then applies the server's gate (:func:`decide`) as the server does.

    With ``epoch_size``, a small labelled set is repeated (differently augmented) to that many images per
    epoch, so that 20 labels get as many optimisation steps as 200 would and rounds differ only in data.
    ``baseline`` is the incoming network's validation scores (None: nothing served yet, anything trained is
    kept); when the gate keeps the new model aside, the incoming network stays.
    """
    candidate = work / "candidate.pt"
    candidate.unlink(missing_ok=True)
    repeats = max(1, math.ceil(epoch_size / len(labelled)))
    items = (labelled * repeats)[: max(epoch_size, len(labelled))]
    incoming = {k: v.detach().clone() for k, v in network.state_dict().items()}
    history = fit(TrainingRun(network, network_spec(arch), items, val, candidate), cfg)
    best = max(history, key=lambda h: h.val["iou"]) if history and candidate.exists() else None
    decision = decide(best.val["iou"] if best else None, baseline["iou"] if baseline else None)
    if decision != PUBLISHED or best is None:
        network.load_state_dict(incoming)
        return network.float().train(), dict(baseline or {})
    network, _ = load_model(candidate)
    return network.float().train(), best.val


def starting_network(arch: str, init: Path | None, seed: int) -> torch.nn.Module:
    """A seeded fresh network, or the model file a server would be serving before any label arrives."""
    torch.manual_seed(seed)
    if init is None:
        return build_network(arch)
    return load_model(init)[0].float().train()


def validation_scores(network: torch.nn.Module, val: list[Item], size: int) -> dict[str, float]:
    loader = DataLoader(Dataset(val, val_transforms((size, size))), batch_size=8)
    return validate(network.eval(), loader)


@dataclass(frozen=True)
class Simulation:
    """What every strategy and seed of one simulation share: the budget, the fine-tuning, the sampling.

    ``seed_labels`` images start labelled, ``step`` more are picked per round for ``rounds`` rounds; ``fit``
    is each round's fine-tuning (``epoch_size``: images per epoch, a small labelled set repeated); from
    ``init`` (a served model file) rather than a fresh ``arch``; ``samples``, ``method`` and ``beta`` are the
    uncertainty sampling and the strategies' weight exponent.
    """

    strategies: Sequence[str]
    seeds: Sequence[int]
    seed_labels: int
    step: int
    rounds: int
    fit: FitConfig
    arch: str = "unet"
    samples: int = 8
    epoch_size: int = 0
    beta: float = 1.0
    init: Path | None = None
    method: str = SERVER_METHOD


def simulate(
    pool: list[Item],
    val: list[Item],
    sim: Simulation,
    work: Path,
    report: Callable[[Round], None] = lambda r: None,
    start: dict[str, float] | None = None,
) -> list[Round]:
    """Every strategy's rounds, for every seed. From ``sim.init`` (a served model, whose validation scores are
    ``start`` when the caller has them), each round's model passes the server's gate before it is kept."""
    rows = []
    size = sim.fit.spatial_size[0]
    if sim.init and start is None:
        start = validation_scores(starting_network(sim.arch, sim.init, 0), val, size)
    for seed in sim.seeds:
        seed_set = random.Random(seed).sample(pool, sim.seed_labels)
        for strategy in sim.strategies:
            network = starting_network(sim.arch, sim.init, seed)
            val_scores = start
            labelled = list(seed_set)
            rng = random.Random(seed + 1)
            for r in range(sim.rounds + 1):
                t0 = time.monotonic()
                gate = val_scores if sim.init else None
                network, val_scores = train_round(network, sim.arch, labelled, val, sim.fit, work, sim.epoch_size, gate)
                fraction = len(labelled) / len(pool)
                seconds = time.monotonic() - t0
                row = Round(strategy, seed, r, len(labelled), fraction, val_scores["iou"], val_scores["dice"], seconds)
                rows.append(row)
                report(row)
                if r < sim.rounds:
                    chosen = {i["id"] for i in labelled}
                    unlabelled = [i for i in pool if i["id"] not in chosen]
                    picks = pick(
                        strategy, network, unlabelled, sim.step, rng, sim.samples, size, sim.beta, sim.method, labelled
                    )
                    labelled += picks
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-simulate", description=__doc__.splitlines()[0])
    p.add_argument("data", help="labelled pool: a folder of images and masks")
    p.add_argument("--out", required=True, help="folder for simulation.csv and simulation.png")
    p.add_argument("--pool", type=int, default=400, help="images the annotator could label (from the train split)")
    p.add_argument("--val", type=int, default=100, help="validation images (from the val split)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="the split's validation share")
    p.add_argument(
        "--init",
        type=Path,
        help="start every strategy from this model file (e.g. a shipped model on a new clinic's photographs), "
        "as the server fine-tunes the model it serves; default: a fresh network of --arch",
    )
    p.add_argument("--seed-labels", type=int, default=20)
    p.add_argument("--step", type=int, default=20, help="images labelled per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--strategies",
        nargs="+",
        default=["random", "uncertainty"],
        choices=STRATEGIES,
        help="random; uncertainty (the top --step scores); power (drawn with probability proportional to "
        "score ** --beta); diverse (one typical image per weighted k-means cluster of the network's features); "
        "density (the top --step of score * information density ** --beta: uncertain and typical); typical "
        "(TypiClust: the most typical image of each feature cluster the labels do not cover yet); "
        "typical-uncertain (the same clusters, their most uncertain image)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs per round")
    p.add_argument("--epoch-size", type=int, default=240, help="images per epoch (small label sets repeat)")
    p.add_argument("--full-epochs", type=int, default=30, help="epochs of the all-labels reference")
    p.add_argument("--arch", default="unet", help="the network to train from scratch (ignored with --init)")
    p.add_argument(
        "--spatial-size", type=int, default=128, help="network input side; smaller than the app's 256 for cheap rounds"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--uncertainty-method",
        choices=METHODS,
        default=SERVER_METHOD,
        help="the server's --conf uncertainty_method (and its default): Monte Carlo dropout or the four flips",
    )
    p.add_argument("--samples", type=int, default=8, help="Monte Carlo dropout samples per image")
    p.add_argument(
        "--score-check",
        action="store_true",
        help="only print how well each uncertainty method's score tracks the --init model's error on the pool",
    )
    p.add_argument(
        "--beta", type=float, default=1.0, help="power and diverse: weight score ** beta (0: random, large: top-k)"
    )
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.beta < 0:
        print(f"error: --beta must be >= 0, not {args.beta}", file=sys.stderr)
        return 2
    if args.score_check and not args.init:
        print("error: --score-check needs the model to check (--init)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train, val = split(find_pairs(args.data), args.val_fraction, seed=0)
        arch = read_checkpoint(args.init)["network"]["arch"] if args.init else args.arch
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pool, val = train[: args.pool], val[: args.val]
    if len(pool) < args.seed_labels + args.step or not val:
        print(f"error: {args.data}: {len(pool)} pool and {len(val)} val images are too few", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = (args.spatial_size, args.spatial_size)
    cfg = FitConfig(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, spatial_size=size)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pool, val = (
            cache_items(pool, args.spatial_size, work / "pool"),
            cache_items(val, args.spatial_size, work / "val"),
        )
        t0 = time.monotonic()
        full_cfg = FitConfig(max_epochs=args.full_epochs, batch_size=args.batch_size, lr=args.lr, spatial_size=size)
        start = validation_scores(starting_network(arch, args.init, 0), val, args.spatial_size) if args.init else None
        start_iou = start["iou"] if start else None
        if start:
            print(f"{args.init} before any label: val IoU {start['iou']:.4f}", flush=True)
            rho = score_tracks_error(starting_network(arch, args.init, 0), pool, args.samples, args.spatial_size)
            tracking = ", ".join(f"{m} {r:+.2f}" for m, r in rho.items())
            print(f"uncertainty score vs the model's error on the pool (Spearman): {tracking}", flush=True)
            if args.score_check:
                return 0
        _, full = train_round(starting_network(arch, args.init, 0), arch, pool, val, full_cfg, work, 0, start)
        print(f"all {len(pool)} labels: val IoU {full['iou']:.4f} ({time.monotonic() - t0:.0f}s)", flush=True)

        def report(r: Round) -> None:
            print(
                f"{r.strategy} seed {r.seed} round {r.round}: {r.labels} labels ({r.fraction:.0%}) "
                f"val IoU {r.val_iou:.4f} ({r.val_iou / full['iou']:.0%} of all labels) {r.seconds:.0f}s",
                flush=True,
            )

        sim = Simulation(
            args.strategies,
            args.seeds,
            args.seed_labels,
            args.step,
            args.rounds,
            cfg,
            arch,
            args.samples,
            args.epoch_size,
            args.beta,
            args.init,
            args.uncertainty_method,
        )
        rows = simulate(pool, val, sim, work, report, start)
    write_csv(out / "simulation.csv", rows, full["iou"], start_iou)
    results = Results(rows, full["iou"], len(pool), start_iou)
    plot(out / "simulation.png", results)
    print(markdown(results), *verdicts(results), sep="\n")
    print(f"{out / 'simulation.csv'}\n{out / 'simulation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
