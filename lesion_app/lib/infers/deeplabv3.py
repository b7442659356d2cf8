"""Infer task of the attention DeepLabV3."""

from lesion_app.lib.infers.lesion import LesionInferTask


class DeepLabV3Infer(LesionInferTask):
    """DeepLabV3 with spatial attention: multi-scale context from its ASPP."""
