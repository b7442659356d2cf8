"""Which labelled images train, which select options and which validate: fixed-seed splits by image id.

The server's train task and ``lesion-train`` both split with :func:`split` on the image id (the file name
without its extension), so the same labels split the same way whichever trains.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

#: Seeds of the project's splits: ``VAL_SEED`` holds out the reported validation split, ``SELECTION_SEED``
#: carves the selection split (where epochs, thresholds and options are chosen) out of the training part.
VAL_SEED = 0
SELECTION_SEED = 1
#: The selection split's share of the training part.
SELECTION_FRACTION = 0.15


def selection_split(pairs: Sequence[dict[str, str]], val_fraction: float = 0.2) -> list:
    """The selection split of a data set: :data:`SELECTION_FRACTION` of the part the validation split leaves for
    training (fixed seeds, the same ids on every machine)."""
    return split(split(pairs, val_fraction)[0], SELECTION_FRACTION, SELECTION_SEED)[1]


def split(pairs: Sequence[dict[str, str]], val_fraction: float = 0.2, seed: int = VAL_SEED) -> tuple[list, list]:
    """Deterministic (train, validation) split of items with an ``"id"``: the same ids land in validation on
    every machine and in every run, whatever order the items come in.

    With one item there is no validation; otherwise at least one item validates.

    Raises:
        ValueError: ``val_fraction`` is not in (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    ordered = sorted(pairs, key=lambda p: p["id"])
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(len(ordered) * val_fraction)) if len(ordered) > 1 else 0
    return ordered[n_val:], ordered[:n_val]
