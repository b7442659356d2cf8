from __future__ import annotations

import pytest
import torch

from lesion_app.core.losses import HybridLoss


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
