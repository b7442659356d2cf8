"""Which K unlabelled images to label next, given one uncertainty score per image: batch selection.

Taking the K highest scores (top-K) fails on this data: the K images a weak model is least sure of are
alike and atypical. On ISIC, with a U-Net fine-tuned on 15 or 60 labels, the top 15 of 285 by mask
disagreement had lesions covering 4-7% of the image against 29% for the pool (the masks of small lesions
move most between dropout samples), so the labels teach the model about few, unrepresentative
photographs and it learns slower than from a random batch. Two remedies from the literature, both plain
functions of numbers so that the server and ``lesion-simulate`` share them:

- :func:`power_sample` (Kirsch et al., 2023, *Stochastic Batch Acquisition: A Simple Baseline for Deep
  Active Learning*, TMLR): draw K images without replacement with probability proportional to
  ``score ** beta``. Uncertain images are still preferred, but the batch is spread over the pool instead of
  its extreme tail; ``beta = 0`` is random sampling and a large ``beta`` is top-K.
- :func:`diverse_sample` (Zhdanov, 2019, *Diverse mini-batch Active Learning*): weighted k-means with K
  centres over image embeddings, each image weighted by ``score ** beta``, then the image nearest each
  centre (without its pre-filter to the top few K, which would keep only the small-lesion tail). One pick
  per cluster keeps the batch diverse, nearest-to-centre keeps it typical rather than outlying, and the
  weights pull the centres toward where the model is unsure.
- :func:`density_weighted_top` (Settles and Craven, 2008, *An Analysis of Active Learning Strategies for
  Sequence Labeling Tasks*, information density): the K highest ``score * density ** beta``, where the
  density is how typical an image's embedding is of the pool, so an uncertain outlier ranks below an
  uncertain photograph like many others.
- :func:`typical_sample` (Hacohen, Dekel and Weinshall, 2022, *Active Learning on a Budget: Opposite
  Strategies Suit High and Low Budgets*, TypiClust): with few labels, the images that teach most are the
  typical ones of regions the labels do not yet cover. k-means over every image (labelled too) with
  ``labelled + K`` centres; each pick comes from the cluster with the fewest labels (the largest first),
  and is its most typical image, or with scores its most uncertain one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

#: Added to every score before the power: an image the samples agree on (score 0) keeps a tiny chance,
#: and when every score is 0 the draw is uniform instead of undefined.
SCORE_FLOOR = 1e-6


def _candidates(n: int, exclude: Collection[int]) -> np.ndarray:
    mask = np.ones(n, bool)
    idx = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"exclude has indices outside 0..{n - 1}")
    mask[idx] = False
    return np.flatnonzero(mask)


def _log_weights(scores: np.ndarray, beta: float) -> np.ndarray:
    """``beta * log(score + SCORE_FLOOR)``: in logs, so a large ``beta`` cannot underflow to 0."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, not {beta}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return beta * np.log(np.maximum(scores, 0.0) + SCORE_FLOOR)


def _weights(scores: np.ndarray, beta: float) -> np.ndarray:
    """``score ** beta`` up to a common factor (the largest is 1)."""
    lw = _log_weights(scores, beta)
    return np.exp(lw - lw.max()) if lw.size else lw


def selection_probabilities(scores: Sequence[float] | np.ndarray, beta: float = 1.0) -> np.ndarray:
    """The chance of each image to be drawn first by :func:`power_sample`: ``score ** beta``, normalised."""
    w = _weights(np.asarray(scores, dtype=np.float64).reshape(-1), beta)
    return w / w.sum() if w.size else w


def power_sample(
    scores: Sequence[float] | np.ndarray,
    k: int,
    rng: np.random.Generator,
    beta: float = 1.0,
    exclude: Collection[int] = (),
) -> list[int]:
    """``min(k, available)`` distinct indices into ``scores``, never one in ``exclude``.

    Drawn without replacement with probability proportional to ``(score + SCORE_FLOOR) ** beta`` (scores
    below 0 count as 0), by the Gumbel-top-k trick: the K largest ``beta * log(score) + Gumbel noise`` are
    an exact sample of that sequential draw, in one sort. Returned in the order drawn.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    cand = _candidates(len(s), exclude)
    if k <= 0 or cand.size == 0:
        return []
    keys = _log_weights(s[cand], beta) + rng.gumbel(size=cand.size)
    order = np.argsort(-keys, kind="stable")[:k]
    return [int(i) for i in cand[order]]


def weighted_kmeans(
    x: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(k, d)`` and each row's cluster, by weighted k-means++ seeding and Lloyd's iterations.

    ``1 <= k <= len(x)``; ``weights`` are positive. Seeding draws each next centre with probability
    proportional to weight times squared distance to the nearest centre so far (the first proportional to
    weight), keeping the best of ``2 + log k`` such draws, so the centres start spread out and where the
    weight is.
    """
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, not {k}")
    w = weights / weights.sum()
    trials = 2 + int(np.log(k))
    centres = [x[rng.choice(n, p=w)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = w * d2
        total = p.sum()
        tries = rng.choice(n, size=trials, p=p / total) if total > 0 else rng.choice(n, size=trials, p=w)
        # greedy k-means++ (as scikit-learn's): of a few candidates, the one that lowers the cost most
        options = np.minimum(d2[None, :], ((x[None, :, :] - x[tries][:, None, :]) ** 2).sum(2))
        best = int((options * w).sum(1).argmin())
        centres.append(x[tries[best]])
        d2 = options[best]
    c = np.stack(centres)
    assign = np.zeros(n, dtype=np.int64)
    for it in range(iterations):
        dist = ((x[:, None, :] - c[None, :, :]) ** 2).sum(2)
        new = dist.argmin(1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                c[j] = (w[members, None] * x[members]).sum(0) / w[members].sum()
    return c, assign


def diverse_sample(
    scores: Sequence[float] | np.ndarray,
    embeddings: np.ndarray,
    k: int,
    rng: np.random.Generator,
    beta: float = 1.0,
    exclude: Collection[int] = (),
) -> list[int]:
    """``min(k, available)`` distinct indices, never one in ``exclude``: one typical image per region.

    The available rows of ``embeddings`` (one per score; raw, as the network gives them: scaling every
    feature to unit variance would give its near-constant, noisy channels as much say) are clustered by
    k-means with K centres, each image weighted by ``(score + SCORE_FLOOR) ** beta``; from each cluster the
    image nearest its centre is taken. Clusters left empty (identical embeddings) are filled by
    :func:`power_sample` from the rest.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e = np.asarray(embeddings, dtype=np.float64).reshape(len(s), -1)
    cand = _candidates(len(s), exclude)
    if k <= 0 or cand.size == 0:
        return []
    if k >= cand.size:
        return [int(i) for i in cand]
    x = e[cand]
    centres, assign = weighted_kmeans(x, _weights(s[cand], beta), k, rng)
    picked: list[int] = []
    for j in range(k):
        members = np.flatnonzero(assign == j)
        if members.size:
            nearest = members[((x[members] - centres[j]) ** 2).sum(1).argmin()]
            picked.append(int(cand[nearest]))
    if len(picked) < k:
        picked += power_sample(s, k - len(picked), rng, beta, exclude={*exclude, *picked})
    return picked


def _squared_distances(x: np.ndarray) -> np.ndarray:
    """``(n, n)`` squared Euclidean distances between the rows, by one matrix product (clipped at 0, which
    rounding can undershoot)."""
    sq = (x**2).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def information_density(embeddings: np.ndarray) -> np.ndarray:
    """How typical each row is of the set: its mean Gaussian-kernel similarity to every row, in (0, 1].

    The bandwidth is the median distance between rows, so the density does not depend on the features'
    scale; an outlier (far from most rows) gets a small density, a photograph like many others a large one.
    """
    x = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    if len(x) < 2:
        return np.ones(len(x))
    d2 = _squared_distances(x)
    off = d2[~np.eye(len(x), dtype=bool)]
    h2 = float(np.median(off)) or float(off.max()) or 1.0
    return np.exp(-d2 / h2).mean(1)


def density_weighted_top(
    scores: Sequence[float] | np.ndarray,
    embeddings: np.ndarray,
    k: int,
    beta: float = 1.0,
    exclude: Collection[int] = (),
) -> list[int]:
    """The ``k`` highest ``score * density ** beta`` (Settles and Craven, 2008, information density):
    uncertain photographs that are also typical of the unlabelled pool, not its uncertain outliers.

    The density is measured among the candidates (every row not in ``exclude``); ``beta = 0`` is top-K.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, not {beta}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    cand = _candidates(len(s), exclude)
    if k <= 0 or cand.size == 0:
        return []
    density = information_density(np.asarray(embeddings, dtype=np.float64).reshape(len(s), -1)[cand])
    value = np.maximum(s[cand], 0.0) * density**beta
    order = np.argsort(-value, kind="stable")[:k]
    return [int(cand[i]) for i in order]


def typicality(embeddings: np.ndarray, neighbours: int = 20) -> np.ndarray:
    """How typical each row is: the inverse of its mean distance to its ``neighbours`` nearest rows
    (TypiClust's measure; a row in a dense region scores high, an outlier low)."""
    x = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    if len(x) < 2:
        return np.ones(len(x))
    d = np.sqrt(_squared_distances(x))
    np.fill_diagonal(d, np.inf)
    m = min(neighbours, len(x) - 1)
    return 1.0 / (np.sort(d, axis=1)[:, :m].mean(1) + 1e-12)


def typical_sample(
    embeddings: np.ndarray,
    k: int,
    rng: np.random.Generator,
    labelled: Collection[int] = (),
    scores: Sequence[float] | np.ndarray | None = None,
    neighbours: int = 20,
) -> list[int]:
    """``min(k, available)`` distinct indices, never one in ``labelled``: TypiClust (Hacohen et al., 2022).

    ``embeddings`` has a row for every image of the pool, labelled ones included, so that the clusters
    they already cover are known. k-means with ``len(labelled) + k`` centres; then ``k`` times: among the
    clusters with an unlabelled member, the one with the fewest labels (of those, the largest), and from it
    the unlabelled member with the highest typicality over the whole pool (clusters here hold a handful
    of photographs, too few for a neighbour count of their own), or with ``scores`` the highest score.
    Each pick counts as a label for the next.
    """
    e = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    n = len(e)
    if scores is not None and len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} embeddings")
    cand = _candidates(n, labelled)
    if k <= 0 or cand.size == 0:
        return []
    if k >= cand.size:
        return [int(i) for i in cand]
    taken = np.ones(n, bool)
    taken[cand] = False
    _, assign = weighted_kmeans(e, np.ones(n), min(n, int(taken.sum()) + k), rng)
    value = typicality(e, neighbours) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    picked: list[int] = []
    for _ in range(k):
        open_clusters = np.unique(assign[~taken])
        labels = np.array([taken[assign == c].sum() for c in open_clusters])
        sizes = np.array([(assign == c).sum() for c in open_clusters])
        cluster = open_clusters[np.lexsort((-sizes, labels))[0]]
        members = np.flatnonzero((assign == cluster) & ~taken)
        best = int(members[np.argmax(value[members])])
        picked.append(best)
        taken[best] = True
    return picked
