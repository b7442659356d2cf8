from __future__ import annotations

import pytest
import torch

from lesion_app.core.losses import HybridLoss, NormalizedFocalLoss


def _square(size: int = 32) -> torch.Tensor:
    target = torch.zeros(2, 1, size, size)
    target[:, :, 8:24, 10:26] = 1.0
    return target


def test_perfect_prediction_gives_zero_for_each_term() -> None:
    target = _square()
    logits = (target * 2 - 1) * 30.0  # sigmoid is 0 or 1 to float precision
    terms = HybridLoss().terms(logits, target)
    for name, value in terms.items():
        assert float(value) == pytest.approx(0.0, abs=1e-4), name


def test_inverted_prediction_is_worst() -> None:
    target = _square()
    terms = HybridLoss().terms((1 - 2 * target) * 30.0, target)
    assert float(terms["jaccard"]) == pytest.approx(1.0, abs=1e-4)
    assert float(terms["ssim"]) > 1.0  # SSIM of anti-correlated maps is negative
    assert float(terms["focal"]) > 10.0


def test_uncertain_prediction_has_known_terms() -> None:
    """All logits 0: p = 0.5 everywhere; the focal term is 0.25 * log(2) per pixel, the Jaccard term known too."""
    target = _square()
    terms = HybridLoss().terms(torch.zeros_like(target), target)
    fg = float(target.sum(dim=(1, 2, 3))[0])
    n = target[0].numel()
    inter, union = 0.5 * fg, 0.5 * n + fg - 0.5 * fg
    assert float(terms["jaccard"]) == pytest.approx(1 - (inter + 1e-5) / (union + 1e-5), rel=1e-4)
    assert float(terms["focal"]) == pytest.approx(0.25 * torch.log(torch.tensor(2.0)).item(), rel=1e-4)


def test_weights_combine_terms() -> None:
    target = _square()
    logits = torch.randn_like(target)
    terms = HybridLoss().terms(logits, target)
    total = HybridLoss(jaccard_weight=2.0, ssim_weight=0.5, focal_weight=3.0)(logits, target)
    expected = 2 * terms["jaccard"] + 0.5 * terms["ssim"] + 3 * terms["focal"]
    assert float(total) == pytest.approx(float(expected), rel=1e-5)


def test_half_precision_logits_give_a_finite_loss_and_gradient() -> None:
    target = _square()
    logits = torch.randn_like(target).half().requires_grad_()
    loss = HybridLoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad.float()).all()


def test_shape_mismatch_and_no_reduction_are_refused() -> None:
    with pytest.raises(ValueError):
        HybridLoss()(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError):
        HybridLoss(reduction="none")


def test_normalized_focal_loss_is_zero_for_a_perfect_prediction_and_rejects_bad_shapes() -> None:
    target = _square()
    assert float(NormalizedFocalLoss()((target * 2 - 1) * 30.0, target)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same"):
        NormalizedFocalLoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def _missed_patch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident logits right everywhere but a 4x4 patch of missed lesion, and the target."""
    target = _square(size)
    logits = (target * 2 - 1) * 8.0
    logits[:, :, 12:16, 14:18] = -8.0
    return logits, target


def test_normalized_focal_loss_keeps_a_few_wrong_pixels_weighty_where_focal_loss_fades() -> None:
    """RITM's point: once most pixels are easy, the focal loss of the few wrong ones (a click's region) shrinks with
    their share of the image; the normalised loss rescales the weights so the same mistake weighs the same."""
    nfl, focal = NormalizedFocalLoss(), HybridLoss(jaccard_weight=0.0, ssim_weight=0.0)
    (small, small_target), (large, large_target) = _missed_patch(32), _missed_patch(64)
    assert float(nfl(large, large_target)) == pytest.approx(float(nfl(small, small_target)), rel=0.01)
    assert float(focal(large, large_target)) < 0.3 * float(focal(small, small_target))
    logits = large.clone().requires_grad_(True)
    nfl(logits, large_target).backward()
    grad = logits.grad.abs()
    assert float(grad[:, :, 12:16, 14:18].mean()) > 100 * float(grad[:, :, 40:60, 40:60].mean())
