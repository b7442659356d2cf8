"""Active learning: which photograph the clinician should label next, and where the model is weak."""

from lesion_app.lib.activelearning.dice import DiceScoring
from lesion_app.lib.activelearning.power import PowerUncertainty
from lesion_app.lib.activelearning.uncertainty import Uncertainty, UncertaintyEstimator, UncertaintyScoring

__all__ = ["DiceScoring", "PowerUncertainty", "Uncertainty", "UncertaintyEstimator", "UncertaintyScoring"]
