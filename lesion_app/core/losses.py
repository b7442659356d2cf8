"""The paper's hybrid loss: Jaccard + SSIM + focal (its ``UNET3p_hybrid_loss``)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, FocalLoss
from monai.utils import LossReduction
from pytorch_msssim import ssim
from torch.nn.modules.loss import _Loss


class HybridLoss(_Loss):
    """Weighted sum of soft Jaccard, 1 - SSIM and focal loss on single-channel lesion logits.

    Jaccard rewards overlap, SSIM rewards a border of the right shape and focal loss concentrates on
    hard pixels. Each term is zero for a perfect prediction. SSIM runs in float32 even under mixed
    precision because its Gaussian-filtered variances underflow in half precision.

    Args:
        jaccard_weight: weight of the soft Jaccard (IoU) loss.
        ssim_weight: weight of ``1 - SSIM(sigmoid(logits), target)``.
        focal_weight: weight of the sigmoid focal loss.
        focal_gamma: focusing parameter of the focal loss.
        ssim_window: Gaussian window size of SSIM (odd; must not exceed the image's smaller side).
        reduction: ``"mean"`` or ``"sum"`` over the batch for the Jaccard and focal terms.
    """

    def __init__(
        self,
        jaccard_weight: float = 1.0,
        ssim_weight: float = 1.0,
        focal_weight: float = 1.0,
        focal_gamma: float = 2.0,
        ssim_window: int = 11,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if self.reduction == LossReduction.NONE.value:
            raise ValueError("HybridLoss reduces to a scalar; use 'mean' or 'sum'.")
        self.weights = (jaccard_weight, ssim_weight, focal_weight)
        self.jaccard = DiceLoss(sigmoid=True, jaccard=True, reduction=self.reduction)
        self.focal = FocalLoss(gamma=focal_gamma, use_softmax=False, reduction=self.reduction)
        self.ssim_window = ssim_window

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted loss terms, for logging and tests."""
        if logits.shape != target.shape or logits.shape[1] != 1:
            raise ValueError(
                f"expected logits and target of the same (B, 1, ...) shape, got {logits.shape}, {target.shape}"
            )
        target = target.float()
        probs = torch.sigmoid(logits.float())
        similarity = ssim(probs, target, data_range=1.0, size_average=True, win_size=self.ssim_window)
        return {
            "jaccard": self.jaccard(logits, target),
            "ssim": 1.0 - similarity,
            "focal": self.focal(logits.float(), target),
        }

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = self.terms(logits, target)
        return sum(w * t for w, t in zip(self.weights, terms.values()))
