"""A simulation's results: stored as CSV, read back and merged, drawn, and what they say as numbers.

Strategies differ by a few thousandths of IoU while seeds differ by a few hundredths, so a mean curve alone
misleads: each strategy's round is compared with the baseline's round of the same seed and number of labels
(the same seed set, the same starting weights), and the table gives the mean of those paired differences and
on how many seeds the strategy was ahead. The issue's two criteria are checked from the same rows.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Round:
    """One round of one strategy on one seed: the labels so far and the validation scores they gave."""

    strategy: str
    seed: int
    round: int
    labels: int
    fraction: float
    val_iou: float
    val_dice: float
    seconds: float


def write_csv(path: Path, rows: Sequence[Round], full_iou: float, start_iou: float | None = None) -> None:
    """One row per round, then ``full`` (all labels) and, from a served model, ``start`` (no label yet)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["strategy", "seed", "round", "labels", "fraction", "val_iou", "val_dice", "seconds"])
        for r in rows:
            fields = [r.strategy, r.seed, r.round, r.labels, f"{r.fraction:.4f}", f"{r.val_iou:.4f}"]
            writer.writerow([*fields, f"{r.val_dice:.4f}", f"{r.seconds:.1f}"])
        writer.writerow(["full", "", "", "", "1.0000", f"{full_iou:.4f}", "", ""])
        if start_iou is not None:
            writer.writerow(["start", "", "", "0", "0.0000", f"{start_iou:.4f}", "", ""])


@dataclass
class Results:
    """What ``simulation.csv`` holds: the rounds, the all-labels reference and (from a served model) the start."""

    rows: list[Round]
    full_iou: float
    pool_size: int
    start_iou: float | None = None


def read_csv(path: str | Path) -> Results:
    """A ``simulation.csv`` back as rows, so runs made separately (other strategies, seeds) plot together."""
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    rows = [
        Round(
            r["strategy"],
            int(r["seed"]),
            int(r["round"]),
            int(r["labels"]),
            float(r["fraction"]),
            float(r["val_iou"]),
            float(r["val_dice"]),
            float(r["seconds"]),
        )
        for r in records
        if r["strategy"] not in ("full", "start")
    ]
    full = [float(r["val_iou"]) for r in records if r["strategy"] == "full"]
    start = [float(r["val_iou"]) for r in records if r["strategy"] == "start"]
    if not rows or len(full) != 1:
        raise ValueError(f"{path}: not a lesion-simulate CSV (rounds and one 'full' row)")
    return Results(rows, full[0], round(rows[0].labels / rows[0].fraction), start[0] if start else None)


def merge(results: Sequence[Results]) -> Results:
    """Runs of the same pool, validation set and starting model side by side (their references must agree,
    and no strategy may have run the same seed in two of them: which of the two would count?)."""
    first = results[0]
    for other in results[1:]:
        same = (other.full_iou, other.pool_size, other.start_iou) == (first.full_iou, first.pool_size, first.start_iou)
        if not same:
            raise ValueError("these simulations differ in pool, reference or starting model; run them alike")
    rows = [r for res in results for r in res.rows]
    counts = Counter((r.strategy, r.seed, r.labels) for r in rows)
    twice = sorted({f"{strategy} seed {seed}" for (strategy, seed, _), n in counts.items() if n > 1})
    if twice:
        raise ValueError(f"these simulations both ran {', '.join(twice)}; give each strategy and seed once")
    return Results(rows, first.full_iou, first.pool_size, first.start_iou)


@dataclass(frozen=True)
class Budget:
    """One strategy at one number of labels: its IoU on each seed and, on the seeds the baseline ran too,
    its difference to the baseline's IoU."""

    strategy: str
    labels: int
    ious: tuple[float, ...]
    differences: tuple[float, ...] = ()

    @property
    def seeds(self) -> int:
        return len(self.ious)

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious))

    @property
    def paired(self) -> int:
        return len(self.differences)

    @property
    def difference(self) -> float | None:
        """The mean paired difference; None for the baseline itself or without a common seed."""
        return float(np.mean(self.differences)) if self.differences else None

    @property
    def ahead(self) -> int:
        """Seeds on which the strategy's IoU was higher than the baseline's."""
        return sum(d > 0 for d in self.differences)


def budgets(results: Results, baseline: str = "random") -> list[Budget]:
    """Every strategy's budgets in the order they ran, paired with ``baseline`` where it ran the same seed."""
    iou = {(r.strategy, r.labels, r.seed): r.val_iou for r in results.rows}
    out = []
    for strategy in dict.fromkeys(r.strategy for r in results.rows):
        for labels in sorted({r.labels for r in results.rows if r.strategy == strategy}):
            seeds = sorted(s for (st, n, s) in iou if st == strategy and n == labels)
            ious = tuple(iou[strategy, labels, s] for s in seeds)
            if strategy == baseline:
                out.append(Budget(strategy, labels, ious))
                continue
            paired = [s for s in seeds if (baseline, labels, s) in iou]
            diffs = tuple(iou[strategy, labels, s] - iou[baseline, labels, s] for s in paired)
            out.append(Budget(strategy, labels, ious, diffs))
    return out


def by_strategy(results: Results, baseline: str = "random") -> dict[str, list[Budget]]:
    """:func:`budgets` grouped per strategy, in the order they ran, each by increasing labels."""
    grouped: dict[str, list[Budget]] = {}
    for b in budgets(results, baseline):
        grouped.setdefault(b.strategy, []).append(b)
    return grouped


def markdown(results: Results, baseline: str = "random") -> str:
    """A table: one row per strategy, one column per budget; each cell the mean IoU and, against the
    baseline, the mean paired difference and the seeds ahead; the starting model and the all-labels one
    as rows of their own."""
    grouped = by_strategy(results, baseline)
    labels = sorted({b.labels for mine in grouped.values() for b in mine})
    head = [f"{n} ({n / results.pool_size:.0%})" for n in labels]
    lines = [
        f"| labels (of {results.pool_size}) | " + " | ".join(head) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    empty = " |" * len(labels)
    if results.start_iou is not None:
        lines.append(f"| no label yet (the starting model): {results.start_iou:.3f} |{empty}")
    for strategy, mine in grouped.items():
        cells = {b.labels: b for b in mine}
        seeds = max(b.seeds for b in cells.values())
        text = []
        for n in labels:
            b = cells.get(n)
            if b is None:
                text.append("")
            elif b.difference is None:
                text.append(f"{b.mean_iou:.3f}")
            else:
                text.append(f"{b.mean_iou:.3f} ({b.difference:+.3f}; {b.ahead}/{b.paired})")
        lines.append(f"| `{strategy}`, {seeds} seed{'s' * (seeds != 1)} | " + " | ".join(text) + " |")
    lines.append(f"| all {results.pool_size} labels: {results.full_iou:.3f} |{empty}")
    return "\n".join(lines)


def verdicts(results: Results, baseline: str = "random", share: float = 0.95, budget: float = 0.25) -> list[str]:
    """Per strategy, the issue's two criteria: the first budget whose mean reaches ``share`` of the
    all-labels IoU (and whether that is within ``budget`` of the pool), and whether its mean is ahead of the
    baseline's at every budget after the seed set (where every strategy has the same labels)."""
    target = share * results.full_iou
    out = []
    for strategy, mine in by_strategy(results, baseline).items():
        reached = next((b.labels for b in mine if b.mean_iou >= target), None)
        if reached is None:
            line = f"{strategy}: never reaches {share:.0%} of all labels ({target:.3f})"
        else:
            within = "within" if reached <= budget * results.pool_size else "beyond"
            line = f"{strategy}: {share:.0%} of all labels ({target:.3f}) at {reached} labels ({within} {budget:.0%})"
        if strategy != baseline:
            compared = [b for b in mine[1:] if b.difference is not None]
            if compared:
                behind = [b.labels for b in compared if b.difference <= 0]
                verdict = "ahead at every budget" if not behind else f"not ahead at {behind} labels"
                line += f"; against {baseline}: {verdict}"
        out.append(line)
    return out


def plot(path: Path, results: Results, baseline: str = "random") -> None:
    """Left: each strategy's mean validation IoU against the labels (the baseline's seed range shaded) with
    the all-labels and starting models; right, when there is a baseline to compare with: each strategy's
    paired difference to it, mean and range over seeds, where a strategy that helps sits above zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = by_strategy(results, baseline)
    strategies = list(grouped)
    compared = [s for s in strategies if s != baseline and any(b.paired for b in grouped[s])]
    fig, axes = plt.subplots(1, 2 if compared else 1, figsize=(12, 4.4) if compared else (7, 4.2), squeeze=False)
    ax = axes[0, 0]
    colours = {s: f"C{i}" for i, s in enumerate(strategies)}
    for strategy, mine in grouped.items():
        xs = [b.labels for b in mine]
        label = f"{strategy} ({mine[0].seeds} seeds)"
        ax.plot(xs, [b.mean_iou for b in mine], marker="o", color=colours[strategy], label=label)
        if strategy == baseline:
            low, high = [min(b.ious) for b in mine], [max(b.ious) for b in mine]
            ax.fill_between(xs, low, high, color=colours[strategy], alpha=0.15)
    pool = results.pool_size
    ax.axhline(results.full_iou, color="k", lw=1, label=f"all {pool} labels: {results.full_iou:.3f}")
    ax.axhline(0.95 * results.full_iou, color="k", lw=1, ls="--", label="95% of that")
    if results.start_iou is not None:
        ax.axhline(results.start_iou, color="tab:red", lw=1, ls="-.", label=f"no label yet: {results.start_iou:.3f}")
    ax.axvline(0.25 * pool, color="grey", lw=1, ls=":", label="25% of the pool")
    ax.set(xlabel="labelled images", ylabel="validation IoU (mean over seeds)", title="active learning, simulated")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if compared:
        ax = axes[0, 1]
        every = sorted({b.labels for mine in grouped.values() for b in mine})
        width = 0.8 * min(np.diff(every), default=1.0) / (len(compared) + 1)
        for i, strategy in enumerate(compared):
            mine = [b for b in grouped[strategy] if b.paired]
            xs = np.array([b.labels for b in mine]) + (i - (len(compared) - 1) / 2) * width
            means = np.array([b.difference for b in mine])
            low = means - np.array([min(b.differences) for b in mine])
            high = np.array([max(b.differences) for b in mine]) - means
            ax.errorbar(xs, means, yerr=[low, high], fmt="o", capsize=3, color=colours[strategy], label=strategy)
        ax.axhline(0.0, color=colours[baseline], lw=1.5, label=f"{baseline}")
        ax.set(
            xlabel="labelled images",
            ylabel=f"IoU minus {baseline}'s, same seed",
            title=f"against {baseline}: mean and range over seeds",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
