"""The per-chunk SVD sampler on the random tiny model: shapes, ranges, determinism, conditioning paths."""

from __future__ import annotations

import pytest
import torch

from genprop_cli.config import Task
from genprop_cli.pipelines.svd import GenPropSVDPipeline
from genprop_cli.random_tiny import build_random_tiny_pipeline

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
    return pipe.generate(
        source_latents=source,
        condition_latent=pipe.encode_condition(frames[0], g, noise_aug=0.02),
        image_embeds=pipe.embed_image(frames[0]),
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
def test_generate_returns_latents_and_a_mask_per_frame(pipe, frames, guidance):
    steps_seen = []
    g = torch.Generator().manual_seed(0)
    result = pipe.generate(
        source_latents=pipe.encode_frames(frames),
        condition_latent=pipe.encode_condition(frames[0], g, 0.02),
        image_embeds=pipe.embed_image(frames[0]),
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
