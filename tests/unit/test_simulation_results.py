"""A simulation's numbers: strategies compared with random seed by seed, and the issue's two criteria."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.research.simulation_results import Results, Round, budgets, markdown, merge, read_csv, verdicts, write_csv


def rounds(strategy: str, seed: int, ious: list[float], step: int = 8, pool: int = 96) -> list[Round]:
    return [
        Round(strategy, seed, r, step * (r + 1), step * (r + 1) / pool, iou, iou + 0.05, 40.0)
        for r, iou in enumerate(ious)
    ]


# random: two seeds; clever: the same two (ahead of random on seed 0 only at 16) and a third random lacks
ROWS = [
    *rounds("random", 0, [0.86, 0.87, 0.88]),
    *rounds("random", 1, [0.84, 0.86, 0.87]),
    *rounds("clever", 0, [0.86, 0.88, 0.87]),
    *rounds("clever", 1, [0.84, 0.85, 0.87]),
    *rounds("clever", 2, [0.80, 0.80, 0.80]),
]


def test_budgets_pair_each_strategy_with_random_on_the_same_seed() -> None:
    by = {(b.strategy, b.labels): b for b in budgets(Results(ROWS, 0.88, 96, 0.81))}
    assert by["random", 16].mean_iou == pytest.approx(0.865) and by["random", 16].difference is None
    clever = by["clever", 16]
    assert clever.seeds == 3 and clever.mean_iou == pytest.approx((0.88 + 0.85 + 0.80) / 3)
    # seed 2 has no random run to be compared with: the difference is over seeds 0 and 1 only
    assert clever.paired == 2 and clever.ahead == 1
    assert clever.difference == pytest.approx(((0.88 - 0.87) + (0.85 - 0.86)) / 2)
    assert by["clever", 24].difference == pytest.approx(-0.005) and by["clever", 24].ahead == 0
    assert by["clever", 8].difference == pytest.approx(0.0) and by["clever", 8].ahead == 0


def test_verdicts_check_the_issues_two_criteria() -> None:
    results = Results(ROWS, 0.90, 96, 0.81)  # 95% of 0.90 is 0.855
    random_line, clever_line = verdicts(results)
    assert random_line == "random: 95% of all labels (0.855) at 16 labels (within 25%)"
    assert clever_line.startswith("clever: never reaches 95%")
    assert clever_line.endswith("against random: not ahead at [16, 24] labels")
    better = Results([*rounds("random", 0, [0.86, 0.87, 0.88]), *rounds("clever", 0, [0.86, 0.88, 0.89])], 0.9, 96)
    assert verdicts(better)[1].endswith("against random: ahead at every budget")
    late = Results(rounds("random", 0, [0.5, 0.6, 0.7, 0.86]), 0.9, 32)  # 95% only at the 4th round: 32 of 32
    assert verdicts(late)[0] == "random: 95% of all labels (0.855) at 32 labels (beyond 25%)"


def test_markdown_table_has_a_row_per_strategy_and_a_column_per_budget() -> None:
    table = markdown(Results(ROWS, 0.88, 96, 0.81)).splitlines()
    assert table[0] == "| labels (of 96) | 8 (8%) | 16 (17%) | 24 (25%) |"
    assert table[2] == "| no label yet (the starting model): 0.810 | | | |"
    assert table[3] == "| `random`, 2 seeds | 0.850 | 0.865 | 0.875 |"
    assert table[4] == "| `clever`, 3 seeds | 0.833 (+0.000; 0/2) | 0.843 (+0.000; 1/2) | 0.847 (-0.005; 0/2) |"
    assert table[-1] == "| all 96 labels: 0.880 | | | |"
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_results_survive_the_csv_and_merge(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", ROWS[:6], 0.88, 0.81)
    write_csv(tmp_path / "b.csv", ROWS[6:], 0.88, 0.81)
    merged = merge([read_csv(tmp_path / "a.csv"), read_csv(tmp_path / "b.csv")])
    assert markdown(merged) == markdown(Results(ROWS, 0.88, 96, 0.81))


def test_a_strategy_and_seed_run_twice_cannot_be_merged(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", ROWS[:6], 0.88, 0.81)
    write_csv(tmp_path / "b.csv", ROWS[3:9], 0.88, 0.81)  # random seed 1 in both
    with pytest.raises(ValueError, match="random seed 1"):
        merge([read_csv(tmp_path / "a.csv"), read_csv(tmp_path / "b.csv")])
