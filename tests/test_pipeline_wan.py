"""GenProp sampling on a tiny Wan backbone (both conditioning modes), the API over it, and the CLI end to end
on a tiny DiT built in code, saved and loaded through the registry like a real variant."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clips import make_clip, pattern_frame
from genprop_cli.api import Clip, GenProp
from genprop_cli.cli import app
from genprop_cli.config import PropagationOptions, Task
from genprop_cli.families.wan.sampler import GenPropWanPipeline
from genprop_cli.families.wan.tiny import build_random_tiny_wan_pipeline
from genprop_cli.random_tiny import build_random_tiny

runner = CliRunner()


@pytest.fixture(scope="module", params=["i2v", "ti2v"])
def pipe(request) -> GenPropWanPipeline:
    return GenPropWanPipeline(build_random_tiny_wan_pipeline(seed=0, ti2v=request.param == "ti2v"))


def frames(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize(("n", "padded", "latent"), [(1, 1, 1), (5, 5, 2), (13, 13, 4), (20, 21, 6), (32, 33, 9)])
def test_a_chunk_runs_at_the_next_4k_plus_1_frames(pipe, n, padded, latent):
    assert pipe.padded_length(n) == padded
    channels, side = (48, 2) if pipe.expand_timesteps else (16, 4)  # Wan 2.2's VAE: 48 channels, 16x; 2.1's: 16, 8x
    assert pipe.encode_frames(frames(n)).shape == (channels, latent, side, side)


def test_masks_follow_the_causal_vae_layout(pipe):
    latent_masks = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    per_frame = pipe.mask_to_frames(latent_masks, 13)[:, 0, 0, 0].tolist()
    assert per_frame == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]


def sample(pipe, clip, *, seed=0, guidance=1.0, task=Task.EDIT, prompt_embeds=None):
    anchor = pipe.prepare_anchor(clip[0], prompt_embeds=prompt_embeds)
    return pipe.sample_chunk(
        source_latents=pipe.encode_frames(clip), condition=pipe.first_condition(clip[0]), anchor=anchor, task=task,
        steps=2, guidance=guidance, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def test_sampling_is_deterministic_per_seed_and_guidance_and_seed_matter(pipe):
    clip = frames(9)
    a, b = sample(pipe, clip), sample(pipe, clip)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.mask, b.mask)
    channels, side = (48, 2) if pipe.expand_timesteps else (16, 4)
    assert a.latents.shape == (channels, 3, side, side) and a.mask.shape == (9, 1, side, side)
    assert 0 <= float(a.mask.min()) and float(a.mask.max()) <= 1
    assert not torch.allclose(sample(pipe, clip, seed=1).latents, a.latents)
    assert not torch.allclose(sample(pipe, clip, guidance=4.0).latents, a.latents)
    assert pipe.decode_latents(a.latents).shape == (9, 3, 32, 32)


def test_the_mpd_runs_at_the_last_step_only_and_the_result_is_unchanged(pipe, monkeypatch):
    clip = frames(9)
    calls = []
    handle = pipe.denoiser.adapter.mpd.block.register_forward_hook(lambda *_: calls.append(1))
    try:
        lean = sample(pipe, clip, guidance=3.0)  # 2 steps
        assert len(calls) == 1
        inner = pipe.denoiser
        monkeypatch.setattr(pipe, "denoiser", lambda *a, **k: inner(*a, **{**k, "predict_mask": True, "mask_samples": None}))
        full = sample(pipe, clip, guidance=3.0)
        assert len(calls) == 3
    finally:
        handle.remove()
    assert torch.equal(lean.latents, full.latents)
    torch.testing.assert_close(lean.mask, full.mask, atol=1e-5, rtol=1e-5)


def test_precomputed_prompt_embeddings_skip_the_text_encoder(pipe, monkeypatch):
    clip = frames(5)
    embeds = pipe.encode_prompt("")
    monkeypatch.setattr(pipe, "text_encoder", None)
    with pytest.raises(Exception, match="no text encoder"):
        pipe.prepare_anchor(clip[0])
    precomputed = sample(pipe, clip, prompt_embeds=embeds)
    monkeypatch.undo()
    assert torch.equal(precomputed.latents, sample(pipe, clip).latents)


def test_ti2v_keeps_the_first_latent_frame_exactly():
    pipe = GenPropWanPipeline(build_random_tiny_wan_pipeline(seed=0, ti2v=True))
    clip = frames(9)
    result = sample(pipe, clip)
    condition = pipe._encode_video(clip[0][None, :, None])[0, :, 0]
    assert torch.equal(result.latents[:, 0], condition)


def test_the_api_propagates_across_chunks_from_a_decoded_boundary_frame():
    """48 frames, chunks of 32 sharing 8: chunk 2 is conditioned on the frame chunk 1 generated at index 24."""
    pipe = GenPropWanPipeline(build_random_tiny_wan_pipeline(seed=0))
    model = GenProp(pipe, _variant("random-tiny-wan"))
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    seen = []
    original = pipe.next_condition
    pipe.next_condition = lambda result, decoded, offset: seen.append((decoded.shape, offset)) or original(result, decoded, offset)
    out = list(model.propagate(Clip.from_frames(video, video[0]), PropagationOptions(task=Task.REMOVE, steps=1)))
    assert [f.index for f in out] == list(range(48))
    assert all(f.rgb.shape == (32, 32, 3) and f.mask.shape == (32, 32) for f in out)
    assert seen == [(torch.Size([32, 3, 64, 64]), 24)]  # decoded at the working size (the 64x64 budget)


def _variant(name: str):
    from genprop_cli.weights import resolve_variant

    return resolve_variant(name)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """A registry whose only variant is a tiny Wan 2.2 TI2V-layout DiT built here and saved like a real one."""
    from genprop_cli.weights import sha256_file

    root = tmp_path_factory.mktemp("wan-variant")
    backbone, adapter = build_random_tiny(root, family="wan-ti2v")
    files = "\n".join(
        f'"{p.relative_to(backbone).as_posix()}" = "{sha256_file(p)}"' for p in sorted(backbone.rglob("*.safetensors"))
    )
    configs = ", ".join(f'"{p.relative_to(backbone).as_posix()}"' for p in sorted(backbone.rglob("*.json")))
    path = root / "weights.toml"
    path.write_text(f"""schema_version = 1
default_variant = "tiny-ti2v"

[variants.tiny-ti2v]
description = "tiny random Wan 2.2 TI2V-layout DiT built by the test"
family = "wan"
untrained = true

[variants.tiny-ti2v.backbone]
source = "{backbone.as_posix()}"
configs = [{configs}]

[variants.tiny-ti2v.backbone.files]
{files}

[variants.tiny-ti2v.adapter]
source = "{adapter.as_posix()}"
sha256 = "{sha256_file(adapter)}"

[variants.tiny-ti2v.limits]
max_pixels = 4096
multiple_of = 32
max_frames = 1000

[variants.tiny-ti2v.defaults]
steps = 1
guidance = 1.0
chunk = 32
overlap = 8
dtype = "fp32"
""")
    return path


def test_cli_runs_a_tiny_dit_end_to_end_with_audio_and_a_prompt(registry, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=96, height=64, frames=40, audio="aac")
    Image.fromarray(pattern_frame(0, 96, 64)[:, ::-1].copy()).save(tmp_path / "edited.png")
    out = tmp_path / "out.mp4"
    result = runner.invoke(
        app,
        ["remove", str(clip), "-f", str(tmp_path / "edited.png"), "-o", str(out), "--prompt", "a quiet street",
         "--json", "-q"],
        env={"GENPROP_REGISTRY": str(registry)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["variant"] == "tiny-ti2v" and summary["chunks"] == 2 and summary["frames"] == 40
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (96, 64)
        assert sum(1 for _ in container.decode(video)) == 40
        assert len(container.streams.audio) == 1


def test_a_prompt_on_a_backbone_without_text_is_one_clear_error(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=64, frames=8, audio=None)
    Image.fromarray(pattern_frame(0, 64, 64)).save(tmp_path / "edited.png")
    result = runner.invoke(
        app, ["edit", str(clip), "-f", str(tmp_path / "edited.png"), "--model", "random-tiny", "--prompt", "x", "-q"]
    )
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "no text conditioning" in result.stderr
    assert not (tmp_path / "clip.genprop-edit.mp4").exists()
