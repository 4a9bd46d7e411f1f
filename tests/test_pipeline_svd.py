"""The per-chunk SVD sampler on the random tiny model: shapes, ranges, determinism, conditioning paths."""

from __future__ import annotations

import math

import pytest
import torch

from genprop_cli.config import Task
from genprop_cli.families.svd.sampler import GenPropSVDPipeline
from genprop_cli.families.svd.tiny import build_random_tiny_pipeline

FRAMES, H, W = 6, 32, 48


@pytest.fixture(scope="module")
def pipe():
    return GenPropSVDPipeline(build_random_tiny_pipeline(seed=0))


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(1)
    return torch.rand(FRAMES, 3, H, W, generator=g) * 2 - 1


def run(pipe, frames, seed=0, guidance=1.0, task=Task.REMOVE, steps=2):
    g = torch.Generator().manual_seed(seed)
    source = pipe.encode_frames(frames)
    return pipe.sample_chunk(
        source_latents=source,
        condition=pipe.encode_condition(frames[0], g, noise_aug=0.02),
        anchor=pipe.embed_image(frames[0]),
        task=task,
        steps=steps,
        guidance=guidance,
        generator=g,
    )


def test_latent_geometry_and_round_trip_shapes(pipe, frames):
    latents = pipe.encode_frames(frames)
    f = pipe.spatial_factor
    assert latents.shape == (FRAMES, 4, H // f, W // f)
    decoded = pipe.decode_latents(latents, batch=4)
    assert decoded.shape == frames.shape and decoded.min() >= -1 and decoded.max() <= 1
    assert pipe.size_multiple == f * 2


@pytest.mark.parametrize("guidance", [1.0, 20.0])
def test_sample_chunk_returns_latents_and_a_mask_per_frame(pipe, frames, guidance):
    steps_seen = []
    g = torch.Generator().manual_seed(0)
    result = pipe.sample_chunk(
        source_latents=pipe.encode_frames(frames),
        condition=pipe.encode_condition(frames[0], g, 0.02),
        anchor=pipe.embed_image(frames[0]),
        task=Task.TRACK,
        steps=3,
        guidance=guidance,
        generator=g,
        on_step=lambda i, n: steps_seen.append((i, n)),
    )
    f = pipe.spatial_factor
    assert result.latents.shape == (FRAMES, 4, H // f, W // f)
    assert result.mask.shape == (FRAMES, 1, H // f, W // f)
    assert result.mask.min() >= 0 and result.mask.max() <= 1
    assert torch.isfinite(result.latents).all()
    assert steps_seen == [(1, 3), (2, 3), (3, 3)]


def test_same_seed_same_chunk_other_seed_other_chunk(pipe, frames):
    a, b, c = run(pipe, frames, seed=3), run(pipe, frames, seed=3), run(pipe, frames, seed=4)
    torch.testing.assert_close(a.latents, b.latents, atol=0, rtol=0)
    assert not torch.allclose(a.latents, c.latents)


def test_guidance_changes_the_result(pipe, frames):
    assert not torch.allclose(run(pipe, frames, guidance=1.0).latents, run(pipe, frames, guidance=5.0).latents)


def test_conditioning_from_a_generated_latent_matches_vae_scale(pipe, frames):
    latents = pipe.encode_frames(frames[:1])
    unscaled = pipe.conditioning_from_latent(latents[0])
    g = torch.Generator().manual_seed(0)
    direct = pipe.encode_condition(frames[0], g, noise_aug=0.0)
    torch.testing.assert_close(unscaled, direct, atol=1e-5, rtol=1e-5)


# --- preserve: latents outside the MPD's region anchored to the source --------------------------------------


class _SetMask(torch.nn.Module):
    """The real denoiser, with its MPD's logits replaced by `make(logits)`."""

    def __init__(self, inner, make) -> None:
        super().__init__()
        self.inner, self.make = inner, make

    def forward(self, *args, **kwargs):
        from dataclasses import replace

        out = self.inner(*args, **kwargs)
        if out.mask_logits is None:  # a step whose mask is not read
            return out
        return replace(out, mask_logits=self.make(out.mask_logits))


def everywhere(logit: float):
    return lambda logits: torch.full_like(logits, logit)


def one_pixel(logits: torch.Tensor) -> torch.Tensor:
    """Marks latent pixel (row 2, column 3) of every frame."""
    marked = torch.full_like(logits, -30.0)
    marked[..., 2, 3] = 30.0
    return marked


def ramp(logits: torch.Tensor) -> torch.Tensor:
    """Logits running from -3 to 3 across the width."""
    return torch.linspace(-3, 3, logits.shape[-1], dtype=logits.dtype).expand_as(logits).clone()


def run_preserve(pipe, frames, preserve: bool, guidance: float = 1.0, margin: int = 1, threshold: float = 0.5):
    g = torch.Generator().manual_seed(5)
    source = pipe.encode_frames(frames)
    result = pipe.sample_chunk(
        source_latents=source, condition=pipe.encode_condition(frames[0], g, noise_aug=0.02),
        anchor=pipe.embed_image(frames[0]), task=Task.EDIT, steps=3, guidance=guidance, generator=g,
        preserve=preserve, preserve_margin=margin, preserve_threshold=threshold,
    )  # fmt: skip
    return source, result


@pytest.mark.parametrize("margin", [0, 1, 2])
def test_preserve_margin_sets_how_far_around_the_marked_region_is_generated(pipe, frames, monkeypatch, margin):
    monkeypatch.setattr(pipe, "denoiser", _SetMask(pipe.denoiser, one_pixel))
    source, result = run_preserve(pipe, frames, preserve=True, margin=margin)
    changed = (result.latents - source).abs().amax(dim=(0, 1)) > 1e-6  # (h, w)
    expected = torch.zeros_like(changed)
    expected[max(0, 2 - margin) : 3 + margin, max(0, 3 - margin) : 4 + margin] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_preserve_with_nothing_marked_returns_the_source_latents(pipe, frames, monkeypatch, guidance):
    monkeypatch.setattr(pipe, "denoiser", _SetMask(pipe.denoiser, everywhere(-30.0)))
    source, result = run_preserve(pipe, frames, preserve=True, guidance=guidance)
    torch.testing.assert_close(result.latents, source, rtol=0, atol=1e-6)  # the last step's sigma is 0
    _, free = run_preserve(pipe, frames, preserve=False, guidance=guidance)
    assert (free.latents - source).abs().mean() > 0.1  # without it the model generates everything


def test_preserve_with_everything_marked_is_plain_sampling(pipe, frames, monkeypatch):
    monkeypatch.setattr(pipe, "denoiser", _SetMask(pipe.denoiser, everywhere(30.0)))
    _, anchored = run_preserve(pipe, frames, preserve=True)
    _, plain = run_preserve(pipe, frames, preserve=False)
    torch.testing.assert_close(anchored.latents, plain.latents, rtol=0, atol=0)


class _AlwaysMask(torch.nn.Module):
    """The real denoiser, made to run its MPD at every step and on the whole batch, as sampling did before it
    skipped unread masks."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **{**kwargs, "predict_mask": True, "mask_samples": None})


@pytest.mark.parametrize(("guidance", "preserve", "mpd_runs"), [(1.0, False, 1), (3.0, False, 1), (1.0, True, 3)])
def test_the_mpd_runs_only_at_steps_whose_mask_is_read(pipe, frames, monkeypatch, guidance, preserve, mpd_runs):
    calls = []
    handle = pipe.denoiser.adapter.mpd.block.register_forward_hook(lambda *_: calls.append(1))
    try:
        _, lean = run_preserve(pipe, frames, preserve=preserve, guidance=guidance)  # 3 steps
        assert len(calls) == mpd_runs
        monkeypatch.setattr(pipe, "denoiser", _AlwaysMask(pipe.denoiser))
        _, full = run_preserve(pipe, frames, preserve=preserve, guidance=guidance)
        assert len(calls) == mpd_runs + 3
    finally:
        handle.remove()
    torch.testing.assert_close(lean.latents, full.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lean.mask, full.mask, atol=1e-5, rtol=1e-5)


def test_keep_unmodified_grows_the_region_and_noises_the_rest_to_sigma():
    from genprop_cli.families.svd.sampler import keep_unmodified

    latents, source, noise = torch.full((1, 2, 7, 7), 5.0), torch.zeros(1, 2, 7, 7), torch.ones(1, 2, 7, 7)
    modified = torch.full((1, 1, 7, 7), 0.1)
    modified[0, 0, 3, 3] = 0.3  # one latent pixel more likely changed than the threshold below
    out = keep_unmodified(latents, source, modified, 0.5, noise, threshold=0.2, grow=1)
    generated = torch.zeros(7, 7, dtype=torch.bool)
    generated[2:5, 2:5] = True  # the pixel and its 8 neighbours
    assert (out[0, :, generated] == 5.0).all() and (out[0, :, ~generated] == 0.5).all()
    assert (keep_unmodified(latents, source, modified, 0.5, noise, grow=1) == 0.5).all()  # at 0.5, none of it


@pytest.fixture()
def change_pipe():
    """A sampler whose adapter reads the first frame's change (projection zero, as after the upgrade)."""
    pipe = GenPropSVDPipeline(build_random_tiny_pipeline(seed=0))
    pipe.adapter.add_first_frame_change(pipe.backbone)
    return pipe


def test_first_frame_change_is_edited_minus_source_first_latent_on_every_frame(pipe, change_pipe, frames):
    source = change_pipe.encode_frames(frames)
    scale = change_pipe.vae.config.scaling_factor
    assert pipe.first_frame_change(source[0] / scale, source) is None  # the adapter does not read it
    unedited = change_pipe.first_frame_change(source[0] / scale, source)
    assert unedited.shape == source.shape and unedited.abs().max() < 1e-5
    edited = frames[0].clone()
    edited[:, :8, :8] = 1.0  # a white corner: latent pixels under it change, far ones do not
    change = change_pipe.first_frame_change(change_pipe.encode_condition(edited, None, noise_aug=0.0), source)
    assert torch.equal(change[0], change[-1])
    f = change_pipe.spatial_factor
    # (the random tiny VAE spreads a change widely, hence a far corner and a factor 4)
    inside, outside = change[0, :, : 8 // f, : 8 // f].abs().mean(), change[0, :, -2:, -3:].abs().mean()
    assert outside < inside / 4


def test_a_change_region_keeps_the_first_frame_change_only_inside_it(change_pipe, frames):
    source = change_pipe.encode_frames(frames)
    condition = torch.randn_like(source[0])
    full = change_pipe.first_frame_change(condition, source)
    region = torch.zeros(1, *source.shape[-2:])
    region[:, :2, :3] = 1.0
    kept = change_pipe.first_frame_change(condition, source, region)
    assert torch.equal(kept[:, :, :2, :3], full[:, :, :2, :3]) and full[:, :, :2, :3].abs().min() > 0
    assert (kept[:, :, 2:] == 0).all() and (kept[:, :, :, 3:] == 0).all()


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_a_zero_change_projection_samples_what_the_adapter_did_without_it(pipe, change_pipe, frames, guidance):
    before, after = run(pipe, frames, guidance=guidance), run(change_pipe, frames, guidance=guidance)
    torch.testing.assert_close(after.latents, before.latents, atol=1e-5, rtol=0)
    torch.testing.assert_close(after.mask, before.mask, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.nn.init.normal_(change_pipe.adapter.sce.change_projection.weight, std=0.1)
        for inj in change_pipe.adapter.sce.injections:
            torch.nn.init.normal_(inj.weight, std=0.05)
    assert not torch.allclose(run(change_pipe, frames, guidance=guidance).mask, before.mask)


def test_the_chunk_mask_is_calibrated_for_the_inside_weight_and_preserve_thresholds_it(frames, monkeypatch):
    plain, weighted = (GenPropSVDPipeline(build_random_tiny_pipeline(seed=0)) for _ in range(2))
    weighted.adapter.set_mask_inside_weight(4.0)
    for pipe in (plain, weighted):
        monkeypatch.setattr(pipe, "denoiser", _SetMask(pipe.denoiser, ramp))
    source, a = run_preserve(plain, frames, True, margin=0, threshold=0.5)
    _, b = run_preserve(weighted, frames, True, margin=0, threshold=0.2)
    # raw logit 0 is an even chance at w = 1 and a 1 in 5 chance at w = 4: the same region, the same samples
    torch.testing.assert_close(b.latents, a.latents, rtol=0, atol=0)
    shifted = torch.logit(a.mask.double()) - math.log(4)
    torch.testing.assert_close(torch.logit(b.mask.double()), shifted, atol=1e-4, rtol=0)
    generated = (a.latents - source).abs().amax(dim=(0, 1)) > 1e-6
    assert not generated[:, :4].any() and generated[:, -4:].all()  # the ramp's positive half
    # an even chance at w = 4: a raw logit above log 4
    _, c = run_preserve(weighted, frames, True, margin=0, threshold=0.5)
    narrower = (c.latents - source).abs().amax(dim=(0, 1)) > 1e-6
    assert narrower.sum() < generated.sum() and not (narrower & ~generated).any()
