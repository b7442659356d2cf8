"""Batch selection: power sampling, diverse (weighted k-means), information density and TypiClust."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from lesion_app.core.selection import (
    density_weighted_top,
    diverse_sample,
    information_density,
    power_sample,
    selection_probabilities,
    typical_sample,
    typicality,
    weighted_kmeans,
)

# Mask disagreement scores as the scoring stores them: a long tail of confident images, a few doubtful ones.
SCORES = np.array([0.004, 0.012, 0.02, 0.05, 0.08, 0.11, 0.19, 0.31, 0.52, 0.0, 0.027, 0.064])


def test_power_sample_gives_k_distinct_unlabelled_indices() -> None:
    labelled = {8, 7, 2}  # among them the two most uncertain
    for seed in range(50):
        picked = power_sample(SCORES, 5, np.random.default_rng(seed), beta=1.0, exclude=labelled)
        assert len(picked) == 5 == len(set(picked))
        assert not set(picked) & labelled
        assert all(0 <= i < len(SCORES) for i in picked)
    # asking for more than is left gives everything left, once
    rest = power_sample(SCORES, 100, np.random.default_rng(0), exclude=labelled)
    assert sorted(rest) == sorted(set(range(len(SCORES))) - labelled)
    assert power_sample(SCORES, 0, np.random.default_rng(0)) == []
    assert power_sample(SCORES, 3, np.random.default_rng(0), exclude=range(len(SCORES))) == []
    assert power_sample([], 3, np.random.default_rng(0)) == []


def test_power_sample_is_reproducible_with_a_seed() -> None:
    a = power_sample(SCORES, 4, np.random.default_rng(7))
    assert a == power_sample(SCORES, 4, np.random.default_rng(7))
    draws = {tuple(power_sample(SCORES, 4, np.random.default_rng(s))) for s in range(20)}
    assert len(draws) > 10  # a different seed, (almost always) a different batch


def test_first_draw_follows_score_to_the_power_beta() -> None:
    n = 6000
    rng = np.random.default_rng(1)
    for beta in (1.0, 2.0):
        counts = Counter(power_sample(SCORES, 1, rng, beta)[0] for _ in range(n))
        expected = selection_probabilities(SCORES, beta)
        observed = np.array([counts[i] for i in range(len(SCORES))]) / n
        # binomial standard error is at most 0.0065 here: 4 of them is a safe, still tight, tolerance
        assert np.abs(observed - expected).max() < 0.026, (beta, observed.round(3), expected.round(3))
    p1, p2 = selection_probabilities(SCORES, 1.0), selection_probabilities(SCORES, 2.0)
    assert p1.sum() == pytest.approx(1.0) and p1.argmax() == 8
    assert p2[8] > p1[8]  # a larger beta leans harder on the most uncertain
    assert p1[9] < 1e-4  # a score of 0 (every sample agrees) is practically never drawn


def test_ordered_pairs_are_a_draw_without_replacement() -> None:
    """Gumbel-top-2 must give P(i then j) = w_i / W * w_j / (W - w_i), the sequential draw it replaces."""
    scores = np.array([0.4, 0.3, 0.2, 0.1])
    w = scores + 1e-6
    n = 20000
    rng = np.random.default_rng(2)
    counts = Counter(tuple(power_sample(scores, 2, rng)) for _ in range(n))
    for i, j in itertools.permutations(range(4), 2):
        expected = w[i] / w.sum() * w[j] / (w.sum() - w[i])
        assert counts[(i, j)] / n == pytest.approx(expected, abs=0.012), (i, j)


def test_beta_spans_random_to_top_k() -> None:
    top3 = set(np.argsort(-SCORES)[:3].tolist())
    assert set(power_sample(SCORES, 3, np.random.default_rng(0), beta=60.0)) == top3
    n = 4000
    rng = np.random.default_rng(3)
    counts = Counter(power_sample(SCORES, 1, rng, beta=0.0)[0] for _ in range(n))
    assert min(counts.values()) > n / len(SCORES) * 0.75 and len(counts) == len(SCORES)  # uniform
    # every score 0: uniform rather than undefined
    counts = Counter(power_sample(np.zeros(4), 1, rng)[0] for _ in range(n))
    assert len(counts) == 4 and min(counts.values()) > n / 4 * 0.8


def test_higher_scores_are_chosen_more_often_but_not_always() -> None:
    rng = np.random.default_rng(4)
    chosen = Counter(i for _ in range(2000) for i in power_sample(SCORES, 3, rng))
    assert chosen[8] > chosen[7] > chosen[6] > chosen[0]
    assert chosen[8] < 2000  # the top image is not in every batch: the batch is spread over the pool
    assert chosen[0] > 0 or chosen[1] > 0


def test_bad_arguments_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="beta"):
        power_sample(SCORES, 2, rng, beta=-1.0)
    with pytest.raises(ValueError, match="finite"):
        power_sample([0.1, float("nan")], 1, rng)
    with pytest.raises(ValueError, match="outside"):
        power_sample(SCORES, 2, rng, exclude={len(SCORES)})


def blobs(rng: np.random.Generator, centres: np.ndarray, per: int, spread: float = 0.3) -> np.ndarray:
    return np.concatenate([c + spread * rng.standard_normal((per, centres.shape[1])) for c in centres])


CENTRES = np.array([[0.0, 0.0, 0.0, 0.0], [8.0, 0.0, 0.0, 0.0], [0.0, 8.0, 0.0, 0.0], [0.0, 0.0, 8.0, 0.0]])


def test_weighted_kmeans_finds_blobs_and_weights_pull_the_centre() -> None:
    rng = np.random.default_rng(5)
    x = blobs(rng, CENTRES, 20)
    centres, assign = weighted_kmeans(x, np.ones(len(x)), 4, rng)
    assert centres.shape == (4, 4)
    assert sorted(Counter(assign.tolist()).values()) == [20, 20, 20, 20]
    assert all(len(set(assign[b * 20 : (b + 1) * 20].tolist())) == 1 for b in range(4))
    two = np.array([[0.0], [1.0]])
    centre, _ = weighted_kmeans(two, np.array([3.0, 1.0]), 1, rng)
    assert centre[0, 0] == pytest.approx(0.25)  # the weighted mean, pulled to the heavier point
    with pytest.raises(ValueError):
        weighted_kmeans(two, np.ones(2), 3, rng)


def test_diverse_sample_spreads_a_batch_that_top_k_would_spend_on_one_cluster() -> None:
    rng = np.random.default_rng(6)
    x = blobs(rng, CENTRES, 20)
    blob = np.repeat(np.arange(4), 20)
    scores = np.full(80, 0.05)
    scores[blob == 1] = 0.3 + 0.01 * rng.random(20)  # one cluster is all the most uncertain
    top4 = np.argsort(-scores)[:4]
    assert set(blob[top4].tolist()) == {1}
    for seed in range(10):
        picked = diverse_sample(scores, x, 4, np.random.default_rng(seed), beta=1.0)
        assert len(picked) == 4 == len(set(picked))
        assert sorted(blob[picked].tolist()) == [0, 1, 2, 3]  # one per cluster
        assert power_sample(scores, 4, np.random.default_rng(seed)) != picked
    # and spread in the embedding: mean pairwise distance far above top-K's
    spread = np.mean([np.linalg.norm(x[a] - x[b]) for a, b in itertools.combinations(picked, 2)])
    spread_top = np.mean([np.linalg.norm(x[a] - x[b]) for a, b in itertools.combinations(top4, 2)])
    assert spread > 10 * spread_top


def test_diverse_sample_takes_typical_images_not_outliers() -> None:
    rng = np.random.default_rng(7)
    x = blobs(rng, CENTRES[:1], 40, spread=1.0)
    x[0] = [4.0, 4.0, 4.0, 4.0]  # an outlier, and the most uncertain image
    scores = np.full(40, 0.1)
    scores[0] = 0.5
    (picked,) = diverse_sample(scores, x, 1, np.random.default_rng(0))
    assert picked != 0
    centre = (scores[:, None] * x).sum(0) / scores.sum()
    assert picked == int(np.linalg.norm(x - centre, axis=1).argmin())  # the image nearest the weighted mean


def test_diverse_sample_never_picks_labelled_images() -> None:
    rng = np.random.default_rng(8)
    x = blobs(rng, CENTRES, 10)
    scores = rng.random(40)
    labelled = set(range(0, 40, 3))
    for seed in range(10):
        picked = diverse_sample(scores, x, 6, np.random.default_rng(seed), exclude=labelled)
        assert len(picked) == 6 == len(set(picked)) and not set(picked) & labelled
    everything_else = diverse_sample(scores, x, 40, np.random.default_rng(0), exclude=labelled)
    assert sorted(everything_else) == sorted(set(range(40)) - labelled)
    # identical embeddings leave clusters empty: the rest of the batch is filled, still distinct
    same = diverse_sample(scores, np.zeros((40, 3)), 5, np.random.default_rng(0), exclude=labelled)
    assert len(same) == 5 == len(set(same)) and not set(same) & labelled


def test_information_density_is_high_in_the_crowd_and_low_for_outliers() -> None:
    rng = np.random.default_rng(9)
    x = blobs(rng, CENTRES[:1], 30, spread=1.0)
    x[0] = [6.0, 6.0, 6.0, 6.0]
    density = information_density(x)
    assert density.shape == (30,) and np.all((density > 0) & (density <= 1))
    assert density.argmin() == 0
    assert np.allclose(information_density(x * 1000.0), density)  # the features' scale does not matter
    assert np.array_equal(information_density(np.zeros((1, 4))), [1.0])


def test_density_weighted_top_prefers_uncertain_typical_images_to_uncertain_outliers() -> None:
    rng = np.random.default_rng(10)
    x = blobs(rng, CENTRES[:1], 30, spread=1.0)
    x[0] = [6.0, 6.0, 6.0, 6.0]  # the most uncertain image, far from the rest
    scores = np.full(30, 0.1)
    scores[0], scores[5] = 0.5, 0.3
    assert density_weighted_top(scores, x, 1, beta=0.0) == [0]  # beta 0: plain top-K
    assert density_weighted_top(scores, x, 1, beta=1.0) == [5]
    picked = density_weighted_top(scores, x, 4, beta=1.0, exclude={5})
    assert len(picked) == 4 == len(set(picked)) and 5 not in picked
    assert density_weighted_top(scores, x, 0) == [] and len(density_weighted_top(scores, x, 99)) == 30
    with pytest.raises(ValueError):
        density_weighted_top(scores, x, 1, beta=-1.0)


def test_typicality_is_high_in_the_crowd_and_low_for_outliers() -> None:
    rng = np.random.default_rng(11)
    x = blobs(rng, CENTRES[:1], 30, spread=1.0)
    x[0] = [6.0, 6.0, 6.0, 6.0]
    t = typicality(x, neighbours=5)
    assert t.shape == (30,) and np.all(t > 0)
    assert t.argmin() == 0
    assert np.allclose(typicality(x * 10.0, neighbours=5), t / 10.0)  # inverse distance: scales with the features
    assert np.array_equal(typicality(np.zeros((1, 4))), [1.0])


def test_typical_sample_covers_the_clusters_the_labels_miss() -> None:
    rng = np.random.default_rng(12)
    x = blobs(rng, CENTRES, 20)
    blob = np.repeat(np.arange(4), 20)
    labelled = {0, 20}  # blobs 0 and 1 already have a label: 2 + 2 centres, one per blob
    for seed in range(10):
        picked = typical_sample(x, 2, np.random.default_rng(seed), labelled=labelled)
        assert len(picked) == 2 == len(set(picked)) and not set(picked) & labelled
        assert sorted(blob[picked].tolist()) == [2, 3]  # the two uncovered blobs, one each
        # each pick is the most typical image of its blob, not any member of it
        for i in picked:
            members = np.flatnonzero(blob == blob[i])
            assert i == members[typicality(x)[members].argmax()]


def test_typical_sample_with_scores_takes_the_most_uncertain_of_an_uncovered_cluster() -> None:
    rng = np.random.default_rng(13)
    x = blobs(rng, CENTRES, 10)
    blob = np.repeat(np.arange(4), 10)
    scores = np.full(40, 0.1)
    scores[3], scores[15] = 0.9, 0.4  # the most uncertain image is in a blob already labelled
    labelled = {0}  # blob 0 has a label: 1 + 3 centres, one per blob
    picked = typical_sample(x, 3, np.random.default_rng(0), labelled=labelled, scores=scores)
    assert sorted(blob[picked].tolist()) == [1, 2, 3] and 15 in picked and 3 not in picked


def test_typical_sample_edges() -> None:
    x = blobs(np.random.default_rng(14), CENTRES, 5)
    assert typical_sample(x, 0, np.random.default_rng(0)) == []
    assert typical_sample(x, 3, np.random.default_rng(0), labelled=range(20)) == []
    assert sorted(typical_sample(x, 50, np.random.default_rng(0), labelled=range(15))) == list(range(15, 20))
    assert typical_sample(x, 4, np.random.default_rng(3)) == typical_sample(x, 4, np.random.default_rng(3))
    same = typical_sample(np.zeros((20, 4)), 6, np.random.default_rng(0), labelled={1, 2})  # one point, many times
    assert len(same) == 6 == len(set(same)) and not set(same) & {1, 2}
    with pytest.raises(ValueError):
        typical_sample(x, 2, np.random.default_rng(0), scores=[0.1, 0.2])
    with pytest.raises(ValueError):
        typical_sample(x, 2, np.random.default_rng(0), labelled={25})
