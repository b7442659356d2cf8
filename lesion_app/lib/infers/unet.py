"""Infer task of the attention U-Net."""

from lesion_app.lib.infers.lesion import LesionInferTask


class UNetInfer(LesionInferTask):
    """U-Net with spatial attention: fast, fine borders."""
