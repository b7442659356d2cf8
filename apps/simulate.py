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
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose
from PIL import Image
from scipy.stats import spearmanr

from apps.simulation_results import Results, Round, markdown, plot, verdicts, write_csv
from lesion_app.lib.activelearning.selection import (
    density_weighted_top,
    diverse_sample,
    power_sample,
    typical_sample,
)
from lesion_app.lib.data import find_pairs, split
from lesion_app.lib.engine import FitConfig, fit, validate
from lesion_app.lib.metrics import score
from lesion_app.lib.models import build_network, load_model, read_checkpoint
from lesion_app.lib.settings import LesionSettings
from lesion_app.lib.transforms import load_transforms, preprocess_transforms, val_transforms
from lesion_app.lib.uncertainty import METHODS, image_scores, sample_probabilities

Item = dict[str, str]

#: How uncertainty is sampled unless told otherwise: as the server does by default.
SERVER_METHOD = LesionSettings.uncertainty_method


def cache_items(items: Sequence[Item], roi: int, folder: Path) -> list[Item]:
    """Each pair resized once to the network's input and stored as PNG, so rounds do not decode big JPEGs."""
    xf = Compose(load_transforms() + preprocess_transforms((roi, roi)))
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
            print(f"  cached {i}/{len(items)} images at {roi}x{roi}", file=sys.stderr, flush=True)
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
    roi: int,
    method: str = SERVER_METHOD,
    with_scores: bool = True,
) -> tuple[list[float], np.ndarray]:
    """Per image, the server's uncertainty score (mask disagreement of the ``method``'s samples: Monte Carlo
    dropout or the four flips, as ``--conf uncertainty_method``) and the network's deepest features averaged
    over the image (a cheap embedding the model already computes). ``with_scores=False``: the embeddings
    alone, from one plain forward pass per image, and no scores."""
    load = Compose(load_transforms(label_key=None) + preprocess_transforms((roi, roi), label_key=None))
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
            image = torch.as_tensor(load({"image": item["image"]})["image"])
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
    network: torch.nn.Module, items: Sequence[Item], samples: int, roi: int, method: str = SERVER_METHOD
) -> list[float]:
    """Mask disagreement of the samples per image (the server's uncertainty score)."""
    return uncertainty_and_embeddings(network, items, samples, roi, method)[0]


def score_tracks_error(network: torch.nn.Module, items: Sequence[Item], samples: int, roi: int) -> dict[str, float]:
    """Rank correlation (Spearman) between each method's uncertainty score and the network's per-image error
    (1 - IoU) over labelled items: how well the score finds the photographs the model gets wrong."""
    load = Compose(load_transforms() + preprocess_transforms((roi, roi)))
    errors = []
    for item in items:
        d = load({"image": item["image"], "label": item["label"]})
        with torch.inference_mode():
            pred = network.eval()(torch.as_tensor(d["image"])[None].float())[0, 0] > 0
        errors.append(1.0 - score(pred.numpy(), np.asarray(d["label"])[0] > 0.5).iou)
    return {
        method: float(spearmanr(uncertainty_ranking(network, items, samples, roi, method), errors).statistic)
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
    roi: int,
    beta: float = 1.0,
    method: str = SERVER_METHOD,
    labelled: Sequence[Item] = (),
) -> list[Item]:
    """The next ``k`` images: ``random``; ``uncertainty`` (top-k scores); ``power`` (drawn with probability
    proportional to score ** beta); ``diverse`` (one typical image per region of the embedding space,
    regions weighted by score ** beta); ``density`` (top-k of score * information density ** beta);
    ``typical`` (TypiClust: the most typical image of each region the ``labelled`` ones do not cover yet);
    ``typical-uncertain`` (the same regions, their most uncertain image). See
    ``lesion_app.lib.activelearning.selection``."""
    if strategy == "random":
        return rng.sample(unlabelled, min(k, len(unlabelled)))
    if strategy in ("typical", "typical-uncertain"):
        uncertain = strategy == "typical-uncertain"
        scores, embeddings = uncertainty_and_embeddings(network, unlabelled, samples, roi, method, uncertain)
        if labelled:  # they shape the clusters but are never picked: their embeddings alone
            known = uncertainty_and_embeddings(network, labelled, samples, roi, method, with_scores=False)[1]
            embeddings = np.concatenate([known, embeddings])
        generator = np.random.default_rng(rng.getrandbits(64))
        everything_scores = [0.0] * len(labelled) + scores if uncertain else None
        chosen = typical_sample(embeddings, k, generator, range(len(labelled)), everything_scores)
        return [unlabelled[i - len(labelled)] for i in chosen]
    if strategy == "uncertainty":
        scores = uncertainty_ranking(network, unlabelled, samples, roi, method)
        order = sorted(range(len(unlabelled)), key=lambda i: -scores[i])
        return [unlabelled[i] for i in order[:k]]
    if strategy in ("power", "diverse", "density"):
        scores, embeddings = uncertainty_and_embeddings(network, unlabelled, samples, roi, method)
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
    """Fine-tunes on the labels so far and continues from the best epoch, as the server serves it.

    With ``epoch_size``, a small labelled set is repeated (differently augmented) to that many images per
    epoch, so that 20 labels get as many optimisation steps as 200 would and rounds differ only in data.
    With ``baseline`` (the incoming network's validation scores), the server's gate: when no epoch beats
    it, the incoming network stays.
    """
    out = work / "model.pt"
    out.unlink(missing_ok=True)
    repeats = max(1, math.ceil(epoch_size / len(labelled)))
    items = (labelled * repeats)[: max(epoch_size, len(labelled))]
    incoming = {k: v.detach().clone() for k, v in network.state_dict().items()}
    history = fit(network, arch, {}, items, val, out, cfg, baseline_iou=baseline["iou"] if baseline else -1.0)
    if not out.exists():
        network.load_state_dict(incoming)
        return network.float().train(), dict(baseline or {})
    best = max(history, key=lambda h: h.val["iou"])
    network, _ = load_model(out)
    return network.float().train(), best.val


def starting_network(arch: str, init: Path | None, seed: int) -> torch.nn.Module:
    """A seeded fresh network, or the model file a server would be serving before any label arrives."""
    torch.manual_seed(seed)
    if init is None:
        return build_network(arch)
    return load_model(init)[0].float().train()


def validation_scores(network: torch.nn.Module, val: list[Item], roi: int) -> dict[str, float]:
    loader = DataLoader(Dataset(val, val_transforms((roi, roi))), batch_size=8)
    return validate(network.eval(), loader)


def simulate(
    pool: list[Item],
    val: list[Item],
    strategies: Sequence[str],
    seeds: Sequence[int],
    seed_labels: int,
    step: int,
    rounds: int,
    cfg: FitConfig,
    arch: str,
    work: Path,
    samples: int = 8,
    report: Callable[[Round], None] = lambda r: None,
    epoch_size: int = 0,
    beta: float = 1.0,
    init: Path | None = None,
    method: str = SERVER_METHOD,
    start: dict[str, float] | None = None,
) -> list[Round]:
    """Every strategy's rounds, for every seed. From ``init`` (a served model, whose validation scores are
    ``start`` when the caller has them), rounds fine-tune it and keep a round's model only when validation
    IoU did not drop, as the server's gate does."""
    rows = []
    if init and start is None:
        start = validation_scores(starting_network(arch, init, 0), val, cfg.roi_size[0])
    for seed in seeds:
        seed_set = random.Random(seed).sample(pool, seed_labels)
        for strategy in strategies:
            network = starting_network(arch, init, seed)
            val_scores = start
            labelled = list(seed_set)
            rng = random.Random(seed + 1)
            for r in range(rounds + 1):
                t0 = time.monotonic()
                gate = val_scores if init else None
                network, val_scores = train_round(network, arch, labelled, val, cfg, work, epoch_size, gate)
                row = Round(
                    strategy,
                    seed,
                    r,
                    len(labelled),
                    len(labelled) / len(pool),
                    val_scores["iou"],
                    val_scores["dice"],
                    time.monotonic() - t0,
                )
                rows.append(row)
                report(row)
                if r < rounds:
                    chosen = {i["id"] for i in labelled}
                    unlabelled = [i for i in pool if i["id"] not in chosen]
                    roi = cfg.roi_size[0]
                    labelled += pick(strategy, network, unlabelled, step, rng, samples, roi, beta, method, labelled)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    p.add_argument("--roi-size", type=int, default=128, help="smaller than the app's 256 to keep rounds cheap")
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
    roi = (args.roi_size, args.roi_size)
    cfg = FitConfig(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, roi_size=roi)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pool, val = cache_items(pool, args.roi_size, work / "pool"), cache_items(val, args.roi_size, work / "val")
        t0 = time.monotonic()
        full_cfg = FitConfig(max_epochs=args.full_epochs, batch_size=args.batch_size, lr=args.lr, roi_size=roi)
        start = validation_scores(starting_network(arch, args.init, 0), val, args.roi_size) if args.init else None
        start_iou = start["iou"] if start else None
        if start:
            print(f"{args.init} before any label: val IoU {start['iou']:.4f}", flush=True)
            rho = score_tracks_error(starting_network(arch, args.init, 0), pool, args.samples, args.roi_size)
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

        rows = simulate(
            pool,
            val,
            args.strategies,
            args.seeds,
            args.seed_labels,
            args.step,
            args.rounds,
            cfg,
            arch,
            work,
            args.samples,
            report,
            args.epoch_size,
            args.beta,
            args.init,
            args.uncertainty_method,
            start,
        )
    write_csv(out / "simulation.csv", rows, full["iou"], start_iou)
    results = Results(rows, full["iou"], len(pool), start_iou)
    plot(out / "simulation.png", results)
    print(markdown(results), *verdicts(results), sep="\n")
    print(f"{out / 'simulation.csv'}\n{out / 'simulation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
