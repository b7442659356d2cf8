"""CPU speed of the shipped models beside MONAI's stock networks, all measured in one interleaved run.

A claim such as "our U-Net runs in 0.6x the time of MONAI's AttentionUnet" only holds when both numbers
come from the same run on the same (possibly busy) machine. So every repetition times each candidate once,
in an order that rotates from one repetition to the next, and the report gives medians, p90 and the ratio
of each median to both baselines. Three things are measured:

- ``forward_ms``: the network alone, one 256x256 image, in ``torch.inference_mode()``;
- ``pipeline_ms``: a JPEG file to a mask PNG on disk (:class:`~lesion_app.core.predictor.Predictor` for
  our models, the identical transforms around the baselines), i.e. the in-process part of a server request;
- ``train_img_per_s``: training throughput, batch 8 at 256x256, AdamW with the hybrid loss, train mode.

Speed options for a CPU deployment (channels-last memory, TorchScript, frozen TorchScript, int8 static
quantisation) are timed in the same forward rounds as "variants" of our models, each checked against the
eager network on the benchmark photograph; lossy ones are flagged and never on by default.

Example::

    python -m apps.benchmark --repeats 30 --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import AttentionUnet, UNet
from PIL import Image
from torch import nn

from apps.make_sample_data import draw_study
from lesion_app.core.checkpoint import load_model
from lesion_app.core.losses import HybridLoss
from lesion_app.core.predictor import Predictor, prepare
from lesion_app.lib.settings import SHIPPED_MODEL_DIR

MODEL_DIR = SHIPPED_MODEL_DIR
OURS = ("unet", "deeplabv3")
BASELINES = ("monai_attentionunet", "monai_unet")
ALL_MODELS = OURS + BASELINES
#: metric -> (table label, True when smaller is better)
METRICS: dict[str, tuple[str, bool]] = {
    "forward_ms": ("forward ms", True),
    "pipeline_ms": ("pipeline ms", True),
    "train_img_per_s": ("train img/s", False),
}
#: variant -> lossy; int8 changes the logits, so it is opt-in and labelled.
VARIANTS: dict[str, bool] = {"channels_last": False, "script": False, "freeze": False, "int8": True}
DEFAULT_VARIANTS = "channels_last,script,freeze"
#: calls made right after building a variant: TorchScript's profiling executor optimises the graph during
#: its first runs, and oneDNN creates its channels-last kernels on first use; neither belongs in the timings.
VARIANT_SETTLE_CALLS = 3
#: the issue's targets, quoted by docs/results.md.
TARGET_FORWARD_RATIO = 0.6
TARGET_SERVER_PIPELINE_MS = 150.0


def baseline_network(name: str) -> nn.Module:
    """MONAI's stock networks at our channel widths (16-256), randomly initialised: speed only."""
    common = {"spatial_dims": 2, "in_channels": 3, "out_channels": 1, "channels": (16, 32, 64, 128, 256)}
    if name == "monai_attentionunet":
        return AttentionUnet(strides=(2, 2, 2, 2), **common)
    if name == "monai_unet":
        return UNet(strides=(2, 2, 2, 2), num_res_units=2, **common)
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


@dataclass
class Candidate:
    """One network under test; ``model_path`` is set for shipped models, which the pipeline reloads."""

    name: str
    network: nn.Module
    model_path: Path | None = None

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def load_candidates(models: Sequence[str], model_dir: Path) -> list[Candidate]:
    out = []
    for name in models:
        if name in OURS:
            path = model_dir / f"pretrained_{name}.pt"
            out.append(Candidate(name, load_model(path)[0].eval(), path))
        else:
            out.append(Candidate(name, baseline_network(name).eval()))
    return out


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call for every candidate, round-robin with a rotating start, so load hits all alike."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            t = time.perf_counter()
            calls[name]()
            out[name].append(time.perf_counter() - t)
    return out


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    values = np.asarray(samples, dtype=float)
    return {
        "median": float(np.median(values)),
        "min": float(values.min()),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
        "mean": float(values.mean()),
        "n": int(values.size),
        "samples": [float(v) for v in values],
    }


def compare(stats: dict[str, Any], ref: dict[str, Any] | None, key: str) -> None:
    """Adds ``ratio_vs_<key>`` (median / reference median) and ``paired_ratio_vs_<key>``.

    The paired ratio is the median over rounds of this round's sample / the reference's sample in the same
    round. Load bursts on a shared machine last several rounds and inflate both members of a pair, so it is
    steadier than the ratio of medians when the machine is busy. Both are None without a reference.
    """
    if ref is None:
        stats[f"ratio_vs_{key}"] = stats[f"paired_ratio_vs_{key}"] = None
        return
    stats[f"ratio_vs_{key}"] = stats["median"] / ref["median"]
    pairs = [a / b for a, b in zip(stats["samples"], ref["samples"])]
    stats[f"paired_ratio_vs_{key}"] = float(np.median(pairs)) if pairs else None


def add_ratios(results: dict[str, dict[str, Any]], metric: str) -> None:
    """Ratios of every model's ``metric`` to each baseline that was run."""
    for entry in results.values():
        stats = entry["metrics"].get(metric)
        if stats is None:
            continue
        for base in BASELINES:
            compare(stats, results.get(base, {}).get("metrics", {}).get(metric), base)


def benchmark_image(image: Path | None, folder: Path, seed: int = 0) -> Path:
    """The given photograph, or a drawn 512x384 JPEG like sample-data's (quality 90)."""
    if image is not None:
        return image
    img, _ = draw_study(np.random.default_rng(seed), (384, 512))
    path = folder / "benchmark.jpg"
    Image.fromarray(img).save(path, quality=90)
    return path


def preprocessed(image: Path, size: int) -> torch.Tensor:
    """The (1, 3, size, size) network input the pipeline makes of ``image``: realistic calibration/check data."""
    return prepare(image, (size, size)).batch


def _channels_last(network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    net = copy.deepcopy(network).eval().to(memory_format=torch.channels_last)
    return lambda x: net(x.contiguous(memory_format=torch.channels_last))


def _script(network: nn.Module) -> torch.jit.ScriptModule:
    net = copy.deepcopy(network).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 marks TorchScript deprecated; it still works
        return torch.jit.script(net)


def _freeze(network: nn.Module) -> torch.jit.ScriptModule:
    """Frozen TorchScript: BatchNorm folded into the convolutions, constants inlined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.optimize_for_inference(torch.jit.freeze(_script(network)))


def _int8(network: nn.Module, calibration: Sequence[torch.Tensor]) -> nn.Module:
    """Post-training static int8 quantisation (FX, x86 backend), calibrated on real-looking photographs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        prepared = prepare_fx(copy.deepcopy(network).eval(), get_default_qconfig_mapping("x86"), (calibration[0],))
        with torch.no_grad():
            for x in calibration:
                prepared(x)
        return convert_fx(prepared)


def build_variant(kind: str, network: nn.Module, calibration: Sequence[torch.Tensor]) -> Callable[..., torch.Tensor]:
    if kind == "channels_last":
        return _channels_last(network)
    if kind == "script":
        return _script(network)
    if kind == "freeze":
        return _freeze(network)
    if kind == "int8":
        return _int8(network, calibration)
    raise ValueError(f"unknown variant {kind!r}; choose from {sorted(VARIANTS)}")


def agreement(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """How far a variant's logits are from the eager network's, and how much of the mask changes."""
    ref_mask, mask = reference > 0, other > 0
    union = float((ref_mask | mask).sum())
    return {
        "max_abs_logit_diff": float((other.float() - reference).abs().max()),
        "mask_pixel_agreement": float((ref_mask == mask).float().mean()),
        "mask_iou_vs_eager": float((ref_mask & mask).sum()) / union if union else 1.0,
    }


def calibration_inputs(image: Path, size: int, count: int = 4) -> list[torch.Tensor]:
    """The benchmark photograph plus drawn studies, as network inputs, for int8 calibration."""
    inputs = [preprocessed(image, size)]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count - 1):
            inputs.append(preprocessed(benchmark_image(None, Path(tmp), seed=100 + i), size))
    return inputs


def time_forward(
    candidates: list[Candidate], variants: Sequence[str], image: Path, args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Forward rounds over the models and their variants together, so variant ratios are same-run too."""
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    calls: dict[str, Callable[[], Any]] = {c.name: (lambda net=c.network: net(x)) for c in candidates}
    variant_info: dict[str, dict[str, Any]] = {}
    real = preprocessed(image, args.size)
    calibration = calibration_inputs(image, args.size) if "int8" in variants else []
    for cand in (c for c in candidates if c.name in OURS):
        with torch.inference_mode():
            reference = cand.network(real)
        for kind in variants:
            name = f"{cand.name}+{kind}"
            info: dict[str, Any] = {"model": cand.name, "variant": kind, "lossy": VARIANTS[kind]}
            t = time.perf_counter()
            try:
                fn = build_variant(kind, cand.network, calibration)
                with torch.inference_mode():
                    for _ in range(VARIANT_SETTLE_CALLS):
                        fn(x)
                    info |= agreement(reference, fn(real))
            except Exception as e:  # a variant that cannot be built is reported, not fatal
                info["error"] = f"{type(e).__name__}: {e}"
                variant_info[name] = info
                continue
            info["build_s"] = time.perf_counter() - t
            variant_info[name] = info
            calls[name] = lambda fn=fn: fn(x)
    with torch.inference_mode():
        return interleaved(calls, args.repeats, args.warmup), variant_info


def time_pipeline(candidates: list[Candidate], image: Path, out_dir: Path, args: argparse.Namespace) -> dict:
    """JPEG file to mask PNG on disk, as a server request does it minus HTTP."""
    size = (args.size, args.size)
    calls: dict[str, Callable[[], Any]] = {}
    for cand in candidates:
        predictor = Predictor([cand.network], size, tta=args.tta, postprocess=args.postprocess)

        def call(p: Predictor = predictor, out: Path = out_dir / f"{cand.name}.png") -> None:
            Image.fromarray(p.mask(image)).save(out)

        calls[cand.name] = call
    return interleaved(calls, args.repeats, args.warmup)


def synthetic_batch(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images with one elliptical lesion each: the loss and optimiser cost do not depend on content."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centre = torch.rand(batch, 2, 1, 1, generator=g) * 0.6 - 0.3
    radius = torch.rand(batch, 2, 1, 1, generator=g) * 0.4 + 0.2
    inside = ((yy - centre[:, 0]) / radius[:, 0]) ** 2 + ((xx - centre[:, 1]) / radius[:, 1]) ** 2 < 1
    return images, inside[:, None].float()


def time_training(candidates: list[Candidate], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per AdamW step with the hybrid loss, on copies so the inference networks stay untouched."""
    images, masks = synthetic_batch(args.train_batch, args.size)
    loss_fn = HybridLoss()
    calls: dict[str, Callable[[], Any]] = {}
    for cand in candidates:
        net = copy.deepcopy(cand.network).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step(net: nn.Module = net, optimizer: torch.optim.Optimizer = optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(images), masks).backward()
            optimizer.step()

        calls[cand.name] = step
    return interleaved(calls, args.train_steps, args.warmup)


def _fmt_ratio(stats: dict[str, Any], key: str) -> str:
    """``ratio of medians (paired ratio)``, or ``-`` when the reference was not run."""
    value, paired = stats[f"ratio_vs_{key}"], stats[f"paired_ratio_vs_{key}"]
    return "-" if value is None else f"{value:.2f}x ({paired:.2f}x)"


def markdown_tables(report: dict[str, Any]) -> str:
    """The main table (one row per model) and the variants table, in Markdown."""
    short = {"monai_attentionunet": "AttU", "monai_unet": "UNet"}
    header = ["model", "params"]
    for label, smaller_better in METRICS.values():
        tail = "p90" if smaller_better else "p10"  # the slow tail either way
        header += [f"{label} median ({tail})"] + [f"vs {short[b]}" for b in BASELINES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in report["models"].items():
        row = [f"`{name}`", f"{entry['params'] / 1e6:.2f} M"]
        for metric, (_, smaller_better) in METRICS.items():
            s = entry["metrics"].get(metric)
            if s is None:
                row += ["-"] * (1 + len(BASELINES))
                continue
            tail = s["p90"] if smaller_better else s["p10"]
            row += [f"{s['median']:.1f} ({tail:.1f})"] + [_fmt_ratio(s, b) for b in BASELINES]
        lines.append("| " + " | ".join(row) + " |")
    if report["variants"]:
        lines += [
            "",
            "| variant | lossy | forward ms median (p90) | vs eager | vs AttU | vs UNet | max abs logit diff "
            "| mask IoU vs eager |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in report["variants"].items():
            if "error" in v:
                lines.append(f"| `{name}` | {'yes' if v['lossy'] else 'no'} | failed: {v['error'][:80]} | | | | | |")
                continue
            s = v["forward_ms"]
            ratios = [_fmt_ratio(s, "eager")] + [_fmt_ratio(s, b) for b in BASELINES]
            lines.append(
                f"| `{name}` | {'**yes**' if v['lossy'] else 'no'} | {s['median']:.1f} ({s['p90']:.1f}) | "
                + " | ".join(ratios)
                + f" | {v['max_abs_logit_diff']:.2g} | {v['mask_iou_vs_eager']:.4f} |"
            )
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> list[str]:
    """The issue's two targets, checked where this run measured them."""
    out = []
    unet = report["models"].get("unet", {}).get("metrics", {})
    fwd = unet.get("forward_ms", {})
    ratio, paired = fwd.get("ratio_vs_monai_attentionunet"), fwd.get("paired_ratio_vs_monai_attentionunet")
    if ratio is not None:
        ok = ratio <= TARGET_FORWARD_RATIO
        out.append(
            f"target: unet forward <= {TARGET_FORWARD_RATIO}x MONAI AttentionUnet: {ratio:.2f}x of medians, "
            f"{paired:.2f}x paired ({'met' if ok else 'NOT met'} by the ratio of medians)"
        )
    for name in OURS:
        pipe = report["models"].get(name, {}).get("metrics", {}).get("pipeline_ms")
        if pipe:
            out.append(
                f"{name}: in-process pipeline median {pipe['median']:.1f} ms; the target is < "
                f"{TARGET_SERVER_PIPELINE_MS:.0f} ms for the whole server request "
                "(python -m apps.research.benchmark_server)"
            )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lesion-benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed rounds for forward and pipeline")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds before each measurement")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--train-steps", type=int, default=10, help="timed AdamW steps per model")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="network input side (a multiple of 32)")
    p.add_argument("--models", default="all", help=f"comma-separated subset of {','.join(ALL_MODELS)}, or all")
    p.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated forward variants of our models from {','.join(VARIANTS)} (int8 is lossy), or none",
    )
    p.add_argument("--image", type=Path, help="photograph for the pipeline (default: a drawn 512x384 JPEG)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation in the pipeline (all models)")
    p.add_argument("--postprocess", action="store_true", help="mask clean-up in the pipeline (all models)")
    p.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="folder of pretrained_<model>.pt")
    p.add_argument("--json", type=Path, help="write the full results (with raw samples) here")
    args = p.parse_args(argv)
    args.models = list(ALL_MODELS) if args.models == "all" else [m.strip() for m in args.models.split(",")]
    unknown = sorted(set(args.models) - set(ALL_MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(ALL_MODELS)}")
    args.variants = [] if args.variants in ("", "none") else [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.repeats < 1 or args.train_steps < 1 or args.warmup < 0 or args.size % 32:
        p.error("--repeats and --train-steps must be >= 1, --warmup >= 0, --size a multiple of 32")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    candidates = load_candidates(args.models, args.model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        image = benchmark_image(args.image, Path(tmp))
        with Image.open(image) as img:
            image_size = [img.width, img.height]
        phase_s: dict[str, float] = {}
        t = time.perf_counter()
        forward, variant_info = time_forward(candidates, args.variants, image, args)
        phase_s["forward"], t = time.perf_counter() - t, time.perf_counter()
        pipeline = time_pipeline(candidates, image, Path(tmp), args)
        phase_s["pipeline"], t = time.perf_counter() - t, time.perf_counter()
    train = time_training(candidates, args)
    phase_s["train"] = time.perf_counter() - t
    models: dict[str, dict[str, Any]] = {}
    for cand in candidates:
        metrics = {
            "forward_ms": summarize([s * 1e3 for s in forward[cand.name]]),
            "pipeline_ms": summarize([s * 1e3 for s in pipeline[cand.name]]),
            "train_img_per_s": summarize([args.train_batch / s for s in train[cand.name]]),
        }
        models[cand.name] = {"params": cand.params, "baseline": cand.name in BASELINES, "metrics": metrics}
    for metric in METRICS:
        add_ratios(models, metric)
    for name, info in variant_info.items():
        if "error" in info:
            continue
        stats = summarize([s * 1e3 for s in forward[name]])
        compare(stats, models[info["model"]]["metrics"]["forward_ms"], "eager")
        for base in BASELINES:
            compare(stats, models.get(base, {}).get("metrics", {}).get("forward_ms"), base)
        info["forward_ms"] = stats
    config = {
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "train_steps": args.train_steps,
        "train_batch": args.train_batch,
        "size": args.size,
        "image": str(args.image) if args.image else "drawn 512x384 JPEG (apps.make_sample_data.draw_study, seed 0)",
        "image_size": image_size,
        "tta": args.tta,
        "postprocess": args.postprocess,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "loadavg_1min_start": load_start,
        "loadavg_1min_end": os.getloadavg()[0],
        "phase_s": phase_s,
    }
    return {"config": config, "models": models, "variants": variant_info}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        report = run(args)
    finally:
        torch.set_num_threads(threads)
    cfg = report["config"]
    print(
        f"torch {cfg['torch']}, {cfg['threads']} threads, {cfg['size']}x{cfg['size']}, image {cfg['image_size'][0]}x"
        f"{cfg['image_size'][1]}, {cfg['repeats']} interleaved repeats (train: {cfg['train_steps']} steps of "
        f"batch {cfg['train_batch']}), tta={cfg['tta']} postprocess={cfg['postprocess']}"
    )
    print(
        "ratios: median / baseline median (in brackets: median of same-round ratios); "
        "below 1 is faster for ms, above 1 is faster for img/s"
    )
    print()
    print(markdown_tables(report))
    print()
    for line in targets(report):
        print(line)
    load = max(cfg["loadavg_1min_start"], cfg["loadavg_1min_end"])
    if load > (cfg["cpu_count"] or 1) - 0.5:
        print(
            f"note: 1-min load average reached {load:.1f} on {cfg['cpu_count']} CPUs: other processes shared the "
            "CPU, so absolute times may be inflated (see p90); the interleaved ratios are the numbers to trust"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
