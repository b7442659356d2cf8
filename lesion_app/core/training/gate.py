"""The no-regression gate: whether a newly trained model may replace the one being served.

One rule for the server's train task and the simulator: publish unless the new model validates worse
than the served one on the same validation split (a tie publishes: the new model saw more labels).
"""

from __future__ import annotations

PUBLISHED = "published"
KEPT_ASIDE = "kept_aside"
NOT_TRAINED = "not_trained"


def decide(new_iou: float | None, baseline_iou: float | None) -> str:
    """``published``, ``kept_aside`` or ``not_trained``.

    Both IoUs come from the same validation split of the same run; ``baseline_iou`` is None when there was
    no model to start from (training from scratch), and then anything trained is better than nothing;
    ``new_iou`` is None when no epoch was trained.
    """
    if new_iou is None:
        return NOT_TRAINED
    if baseline_iou is None or new_iou >= baseline_iou:
        return PUBLISHED
    return KEPT_ASIDE
