"""The paper's hybrid loss: Jaccard + SSIM + focal (its ``UNET3p_hybrid_loss``)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, FocalLoss
from monai.utils import LossReduction
from pytorch_msssim import ssim
from torch.nn import functional as F
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


class NormalizedFocalLoss(_Loss):
    """RITM's normalised focal loss on single-channel lesion logits (Sofiiuk et al., "Reviving Iterative Training
    with Mask Guidance for Interactive Segmentation", 2022, eq. 2).

    Each pixel's cross-entropy ``-log p_t`` is weighted by ``alpha_t (1 - p_t)^gamma`` rescaled per image so that
    the focal weights sum to the number of pixels (the rescaling is not differentiated through): unlike the plain
    focal loss, the total does not fade as most pixels become easy, so the few pixels a click corrects keep their
    weight late in training. ``alpha`` weighs lesion pixels, ``1 - alpha`` skin.

    Args:
        alpha: weight of the lesion pixels (0.5: both classes alike, as RITM trains).
        gamma: focusing parameter.
        eps: floor of the weights' sum.
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.alpha, self.gamma, self.eps = alpha, gamma, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean over the batch of each image's loss; ``logits`` and ``target`` (B, 1, H, W).

        Raises:
            ValueError: the shapes differ or there is more than one channel.
        """
        if logits.shape != target.shape or logits.shape[1] != 1:
            raise ValueError(
                f"expected logits and target of the same (B, 1, ...) shape, got {logits.shape}, {target.shape}"
            )
        positive = target.float() > 0.5
        log_p_t = F.logsigmoid(torch.where(positive, logits.float(), -logits.float()))
        p_t = log_p_t.exp()
        alpha_t = torch.where(positive, self.alpha, 1.0 - self.alpha)
        beta = (1.0 - p_t) ** self.gamma
        pixels = beta[0].numel()
        scale = pixels / (beta.flatten(1).sum(dim=1) + self.eps)
        beta = beta * scale.detach().view(-1, *([1] * (beta.dim() - 1)))
        per_pixel = -alpha_t * beta * log_p_t
        return per_pixel.flatten(1).sum(dim=1).div(pixels).mean()


#: the training losses a model file may name (its meta's ``clicks.loss``), each built with its defaults
LOSSES: dict[str, type[_Loss]] = {"hybrid": HybridLoss, "nfl": NormalizedFocalLoss}
