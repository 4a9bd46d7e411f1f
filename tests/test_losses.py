"""Region-aware loss terms: each region's term sees only its region; L_grad measures the SCE's reaction."""

from __future__ import annotations

import copy

import pytest
import torch

from genprop_cli.families import backbone_for
from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser
from genprop_cli.training.losses import LossWeights, combine, latent_mask, mpd_loss, region_means

B, F, C, H, W = 2, 3, 4, 6, 8


def half_mask() -> torch.Tensor:
    mask = torch.zeros(B, F, 1, H, W)
    mask[..., :, : W // 2] = 1
    return mask


def test_each_region_term_moves_only_when_its_region_changes():
    mask = half_mask()
    base = torch.rand(B, F, C, H, W)
    non_mask, in_mask = region_means(base, mask)

    inside_changed = base + 5 * mask
    n2, m2 = region_means(inside_changed, mask)
    torch.testing.assert_close(n2, non_mask)
    assert m2 > in_mask + 4

    outside_changed = base + 5 * (1 - mask)
    n3, m3 = region_means(outside_changed, mask)
    torch.testing.assert_close(m3, in_mask)
    assert n3 > non_mask + 4


def test_region_means_are_means_not_sums():
    # A tiny edit gets the same weight as a large one: the mean inside a 1-pixel mask equals that pixel.
    per_pixel = torch.zeros(1, 1, 1, H, W)
    per_pixel[..., 2, 3] = 7.0
    mask = torch.zeros(1, 1, 1, H, W)
    mask[..., 2, 3] = 1
    non_mask, in_mask = region_means(per_pixel, mask)
    assert float(in_mask) == pytest.approx(7.0, rel=1e-6) and float(non_mask) == 0.0


def test_empty_mask_gives_zero_mask_term_not_nan():
    non_mask, in_mask = region_means(torch.rand(B, F, C, H, W), torch.zeros(B, F, 1, H, W))
    assert torch.isfinite(non_mask) and float(in_mask) == 0.0


def test_latent_mask_is_the_area_fraction():
    pixels = torch.zeros(1, 2, 16, 16, dtype=torch.bool)
    pixels[:, :, :8, :8] = True
    lm = latent_mask(pixels, (4, 4))
    assert lm.shape == (1, 2, 1, 4, 4)
    assert lm[0, 0, 0, :2, :2].eq(1).all() and lm[0, 0, 0, 2:, 2:].eq(0).all()


def test_mpd_loss_is_zero_for_a_perfect_prediction_and_mse_otherwise():
    mask = half_mask()
    perfect_logits = (mask * 2 - 1) * 40
    assert float(mpd_loss(perfect_logits, mask)) < 1e-12
    assert float(mpd_loss(torch.zeros_like(mask), mask)) == pytest.approx(0.25)


def test_balanced_mpd_loss_weighs_a_small_object_as_much_as_the_background():
    mask = torch.zeros(1, 2, 1, 10, 10)
    mask[..., :1, :5] = 1  # 5% of the pixels
    predicts_nothing = torch.full_like(mask, -40.0)
    assert float(mpd_loss(predicts_nothing, mask)) == pytest.approx(0.05, abs=1e-6)
    assert float(mpd_loss(predicts_nothing, mask, balanced=True)) == pytest.approx(1.0, abs=1e-4)
    perfect = (mask * 2 - 1) * 40
    assert float(mpd_loss(perfect, mask, balanced=True)) < 1e-12
    terms = combine(torch.rand(1, 2, C, 10, 10), mask, predicts_nothing, None, LossWeights(mpd_balanced=True))
    assert float(terms.mpd) == pytest.approx(1.0, abs=1e-4)


def test_balanced_mpd_loss_on_an_unchanged_pair_costs_only_what_it_marks():
    """An unchanged pair's mask is empty: marking nothing is free, marking everything costs 1, never NaN."""
    empty = torch.zeros(1, 2, 1, 10, 10)
    assert float(mpd_loss(torch.full_like(empty, -40.0), empty, balanced=True)) < 1e-12
    assert float(mpd_loss(torch.full_like(empty, 40.0), empty, balanced=True)) == pytest.approx(1.0, abs=1e-6)
    half = torch.zeros_like(empty)
    half[..., :5, :] = 40.0
    assert float(mpd_loss(half - 20.0, empty, balanced=True)) == pytest.approx(0.5, abs=1e-6)


def test_an_inside_weight_makes_a_weighted_mean_whose_optimum_is_shifted_as_documented():
    mask = torch.zeros(1, 1, 1, 1, 4)
    mask[..., :1] = 1  # one pixel of four inside
    logits = torch.tensor([0.0, 0.0, 0.0, 40.0]).reshape(mask.shape)  # p = 0.5, 0.5, 0.5, 1
    errors = torch.tensor([0.25, 0.25, 0.25, 1.0])
    assert float(mpd_loss(logits, mask, inside_weight=1.0)) == pytest.approx(float(errors.mean()))
    assert float(mpd_loss(logits, mask, inside_weight=3.0)) == pytest.approx((3 * 0.25 + 0.25 + 0.25 + 1.0) / 6)
    # One logit shared by ten frames of which two are inside (q = 0.2): the loss is least at p = qw/(qw+1-q),
    # i.e. the MPD's 0.5 point sits where q = 1/(1+w) (w = 4 here) and a plain mean (w = 1) gives p = q.
    frames = torch.zeros(1, 10, 1, 1, 1)
    frames[:, :2] = 1
    for w, optimum in ((1.0, 0.2), (4.0, 0.5)):
        logit = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.SGD([logit], lr=20.0)
        for _ in range(300):
            optimizer.zero_grad()
            mpd_loss(logit.expand_as(frames), frames, inside_weight=w).backward()
            optimizer.step()
        assert float(torch.sigmoid(logit.detach())) == pytest.approx(optimum, abs=1e-3), w
    with pytest.raises(ValueError, match="set one"):
        LossWeights(mpd_balanced=True, mpd_inside_weight=4.0)
    with pytest.raises(ValueError):
        LossWeights(mpd_inside_weight=0.0)


def test_combine_weights_the_terms():
    w = LossWeights(mask=2.0, grad=3.0, mpd=0.5)
    mask = half_mask()
    terms = combine(torch.rand(B, F, C, H, W), mask, torch.zeros_like(mask), torch.tensor(0.1), w)
    expected = terms.non_mask + 2 * terms.mask + 3 * terms.grad + 0.5 * terms.mpd
    torch.testing.assert_close(terms.total, expected)
    with pytest.raises(ValueError):
        LossWeights(mask=-1)


def test_without_region_awareness_the_loss_is_the_plain_mean_plus_mpd():
    """The "w/o region-aware loss" ablation: a small edit region gets no extra weight and L_grad is off."""
    w = LossWeights(region_aware=False, mpd=0.5)
    per_pixel = torch.zeros(B, F, C, H, W)
    mask = torch.zeros(B, F, 1, H, W)
    mask[..., 0, 0] = 1
    per_pixel[..., 0, 0] = 10.0  # error only inside a one-pixel edit
    terms = combine(per_pixel, mask, torch.zeros_like(mask), torch.tensor(5.0), w)
    torch.testing.assert_close(terms.total, per_pixel.mean() + 0.5 * terms.mpd)
    region_aware = combine(per_pixel, mask, torch.zeros_like(mask), torch.tensor(5.0), LossWeights(mpd=0.5))
    assert float(region_aware.total) > 10 * float(terms.total)


@pytest.fixture(scope="module")
def unet():
    return build_random_tiny_pipeline(seed=0).unet.eval()


def sce_response(unet, probe_mask: torch.Tensor, injections_live: bool) -> float:
    model = copy.deepcopy(unet)
    backbone = backbone_for("svd", model)
    denoiser = GenPropDenoiser(backbone, GenPropAdapter(backbone, AdapterConfig("svd", 3)))
    if injections_live:
        for inj in denoiser.adapter.sce.injections:
            torch.nn.init.normal_(inj.weight, std=0.05)
    g = torch.Generator().manual_seed(0)
    source = torch.randn(1, 4, 4, 8, 8, generator=g)
    probe = 0.05 * torch.randn(source.shape, generator=g) * probe_mask
    with torch.no_grad():
        out = denoiser(
            torch.randn(1, 4, 8, 8, 8, generator=g), torch.tensor([0.3]), torch.randn(1, 1, 32, generator=g),
            torch.tensor([[6.0, 127.0, 0.02]]), source_latents=source, task_ids=torch.tensor([1]), probe=probe,
        )  # fmt: skip
    return float(out.sce_response)


def test_l_grad_is_zero_when_the_sce_ignores_the_region_and_positive_when_not(unet):
    region = torch.zeros(1, 4, 1, 8, 8)
    region[..., 2:6, 2:6] = 1
    # Zero-initialised injections: the SCE's output ignores its input entirely.
    assert sce_response(unet, region, injections_live=False) == 0.0
    # Live injections: the SCE reacts to the perturbed region, and not to an empty one.
    assert sce_response(unet, region, injections_live=True) > 1e-6
    assert sce_response(unet, torch.zeros_like(region), injections_live=True) == 0.0
