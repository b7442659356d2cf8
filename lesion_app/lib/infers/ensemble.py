"""Infer task of the ensemble."""

from lesion_app.lib.infers.lesion import LesionInferTask


class EnsembleInfer(LesionInferTask):
    """U-Net and DeepLabV3 probabilities averaged: the most accurate masks, at the cost of both passes."""
