"""Training losses against values computed by hand (METHOD.md section 3)."""

from __future__ import annotations

import math

import pytest
import torch

from madis_stereo.training.losses import (
    LaplaceParams,
    bounded_log_scale,
    distillation_loss,
    distillation_terms,
    gt_loss,
    laplacian_nll,
    normalized_patches,
    reconstruction_loss,
)

LN2 = math.log(2.0)
INF, NAN = float("inf"), float("nan")


def logit_for(log_scale: float, a: float = 3.0, b: float = 3.0) -> float:
    """The confidence logit c whose bounded log-scale c' = 2a(sigmoid(c/b) - 0.5) equals ``log_scale``."""
    p = 0.5 + log_scale / (2 * a)
    return b * math.log(p / (1 - p))


def maps(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


@pytest.fixture()
def pixels():
    """2x2 maps: d, c with c' = [[0, ln2], [ln2, 0]], GT with two valid pixels (1 and 3), pseudo labels."""
    d = maps([0.0, 5.0, 4.0, 1.0]).requires_grad_()
    c = maps([0.0, logit_for(LN2), logit_for(LN2), 0.0])
    gt = maps([1.0, INF, 3.0, NAN])
    pseudo = maps([9.0, 7.0, 9.0, 4.0])
    return d, c, gt, pseudo


def test_bounded_log_scale_values_and_bounds():
    c = torch.tensor([0.0, logit_for(LN2), 1e4, -1e4])
    assert torch.allclose(bounded_log_scale(c), torch.tensor([0.0, LN2, 3.0, -3.0]), atol=1e-5)
    # a and b: c' = 2a(sigmoid(c/b) - 0.5); a=1, b=2, c=2 -> 2(sigmoid(1) - 0.5)
    got = bounded_log_scale(torch.tensor([2.0]), LaplaceParams(a=1.0, b=2.0))
    assert got.item() == pytest.approx(2 * (1 / (1 + math.exp(-1)) - 0.5), rel=1e-6)


def test_laplacian_nll_per_pixel():
    t, d = torch.tensor([1.0, 7.0]), torch.tensor([0.0, 5.0])
    c = torch.tensor([0.0, logit_for(LN2)])
    # |1 - 0| / e^0 + 0 = 1 ; |7 - 5| / e^ln2 + ln2 = 1 + ln2
    assert torch.allclose(laplacian_nll(t, d, c), torch.tensor([1.0, 1.0 + LN2]), atol=1e-6)


def test_gt_loss_by_hand(pixels):
    d, c, gt, _ = pixels
    # valid pixels: (0,0): |1-0|/1 + 0 = 1 ; (1,0): |3-4|/2 + ln2 = 0.5 + ln2 -> mean 0.75 + ln2/2
    loss = gt_loss(d, c, gt)
    assert loss.item() == pytest.approx(0.75 + LN2 / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(d.grad).all()
    assert d.grad.view(-1)[1] == 0 and d.grad.view(-1)[3] == 0  # invalid pixels get no gradient


def test_distillation_loss_by_hand(pixels):
    d, c, gt, pseudo = pixels
    # GT part as above; pseudo part on the two GT-less pixels: (0,1): |7-5|/2 + ln2 = 1 + ln2 ; (1,1): |4-1| = 3
    loss = distillation_loss(d, c, gt, pseudo)
    assert loss.item() == pytest.approx((0.75 + LN2 / 2) + (2.0 + LN2 / 2), rel=1e-6)


def test_distillation_terms_share_one_pass_with_gt_loss(pixels):
    d, c, gt, pseudo = pixels
    on_gt, on_pseudo = distillation_terms(d, c, gt, pseudo)
    assert on_gt.item() == pytest.approx(0.75 + LN2 / 2, rel=1e-6)  # = gt_loss, by hand above
    assert on_pseudo.item() == pytest.approx(2.0 + LN2 / 2, rel=1e-6)
    grad_on_gt = torch.autograd.grad(on_gt, d)[0]
    torch.testing.assert_close(grad_on_gt, torch.autograd.grad(gt_loss(d, c, gt), d)[0])


def test_pseudo_labels_receive_gradient_only_where_gt_is_missing(pixels):
    """The public MaDis code does not detach the pseudo labels: they get the mirror of the prediction's
    gradient (|t - d| is symmetric) on GT-less pixels, and nothing where GT is finite."""
    d, c, gt, pseudo = pixels
    pseudo = pseudo.clone().requires_grad_()
    on_gt, on_pseudo = distillation_terms(d, c, gt, pseudo)
    grad_d = torch.autograd.grad(on_pseudo, d, retain_graph=True)[0]
    (on_gt + on_pseudo).backward()
    missing = ~torch.isfinite(gt)
    assert missing.any() and (~missing).any()
    assert (pseudo.grad[~missing] == 0).all() and (pseudo.grad[missing] != 0).all()
    torch.testing.assert_close(pseudo.grad[missing], -grad_d[missing])


def test_all_valid_gt_distillation_equals_gt_loss(pixels):
    d, c, _, pseudo = pixels
    gt = maps([1.0, 2.0, 3.0, 4.0])
    # all valid: |1-0| + (|2-5|/2 + ln2) + (|3-4|/2 + ln2) + |4-1| = 1 + 1.5 + 0.5 + 3 + 2 ln2, over 4 pixels
    expected = (6.0 + 2 * LN2) / 4
    assert gt_loss(d, c, gt).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(d, c, gt, pseudo).item() == pytest.approx(expected, rel=1e-6)  # empty set adds 0


def test_all_invalid_gt_gives_zero_not_nan(pixels):
    d, c, _, pseudo = pixels
    gt = maps([INF, NAN, -INF, INF])
    loss = gt_loss(d, c, gt)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.equal(d.grad, torch.zeros_like(d))
    # distillation falls back to the pseudo labels everywhere: (9 + 1 + ln2 + 2.5 + ln2 + 3) / 4
    distill = distillation_loss(d, c, gt, pseudo)
    assert distill.item() == pytest.approx((9.0 + (1.0 + LN2) + (2.5 + LN2) + 3.0) / 4, rel=1e-6)


def test_normalized_patches_use_unbiased_variance():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 48, generator=g) * 3 + 1
    target = normalized_patches(images, patch=16)
    assert target.shape == (2, 6, 768)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 6), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(2, 6), atol=1e-4)  # unbiased var of the target is 1


def test_reconstruction_loss_by_hand():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(1, 3, 16, 32, generator=g)  # two 16x16 patches
    mask = torch.tensor([[False, True]])
    target = normalized_patches(images)
    zeros = torch.zeros(1, 2, 768)
    # zero prediction on a normalised patch: mean(t^2) = (n-1)/n * var_u / (var_u + 1e-6) ~= 767/768
    assert reconstruction_loss(zeros, images, mask).item() == pytest.approx(767 / 768, rel=1e-4)
    # prediction 1: mean((1 - t)^2) = 1 - 2 mean(t) + mean(t^2) = 1 + 767/768
    assert reconstruction_loss(zeros + 1, images, mask).item() == pytest.approx(1 + 767 / 768, rel=1e-4)
    # a perfect masked patch costs 0 whatever the visible one holds
    perfect = torch.cat((torch.full((1, 1, 768), 50.0), target[:, 1:]), dim=1)
    assert reconstruction_loss(perfect, images, mask).item() == pytest.approx(0.0, abs=1e-10)
    # the mean runs over masked patches only: two masked patches, errors 0 and 767/768 -> half
    both = torch.tensor([[True, True]])
    half = torch.cat((target[:, :1], zeros[:, 1:]), dim=1)
    assert reconstruction_loss(half, images, both).item() == pytest.approx(767 / 768 / 2, rel=1e-4)
    # no masked patch -> 0
    assert reconstruction_loss(zeros, images, torch.zeros(1, 2, dtype=torch.bool)).item() == 0.0


def test_reconstruction_layout_matches_patchify():
    # a patch whose only structure is a red vertical ramp: target red channel varies with px only
    images = torch.zeros(1, 3, 16, 16)
    images[0, 0] = torch.arange(16.0)[None, :].expand(16, 16)
    target = normalized_patches(images)[0, 0].view(16, 16, 3)  # (py, px, rgb)
    assert torch.allclose(target[0, :, 0], target[5, :, 0])
    assert target[0, 15, 0] > target[0, 0, 0]
    assert torch.allclose(target[..., 1], target[..., 2])
