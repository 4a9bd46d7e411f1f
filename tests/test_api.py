"""The Python API: streaming chunk grouping, working size, chunk-to-chunk conditioning, and loading the
model from a pre-populated Hugging Face cache with HF_HUB_OFFLINE=1 (same code path as a real variant)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

from clips import make_clip, pattern_frame
from genprop_cli.api import Clip, GenProp, OutputOptions, RunRequest, render, working_size
from genprop_cli.config import PropagationOptions, Task
from genprop_cli.errors import ChecksumMismatchError, OptionError, WeightsError
from genprop_cli.weights import Limits, assets_dir
from hubcache import add_to_hf_cache

ROOT = Path(__file__).resolve().parents[1]
W, H = 96, 64


def request_for(clip: Clip, output: Path, options: PropagationOptions) -> RunRequest:
    """A render request for an opened (or in-memory) clip: its edited first frame, written to `output`."""
    return RunRequest(video=clip.video, first_frames=(clip.first_frame,), options=options, outputs=OutputOptions(output=output))


@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (640, 480), (96, 64), (7, 3)])
def test_working_size_keeps_aspect_within_budget(size):
    limits = Limits(max_pixels=4096, multiple_of=8, max_frames=10)
    w, h = working_size(*size, limits, multiple=8)
    assert w % 8 == 0 and h % 8 == 0 and w >= 8 and h >= 8
    assert w * h <= 4096 or min(w, h) == 8
    assert abs(w / h - size[0] / size[1]) / (size[0] / size[1]) < 0.25 or min(w, h) == 8


@pytest.fixture(scope="module")
def model():
    return GenProp.load("random-tiny", device="cpu")


@pytest.fixture
def clip(tmp_path):
    video = make_clip(tmp_path / "clip.mp4", width=W, height=H, frames=40, audio="aac")
    return Clip.open(video, pattern_frame(0, W, H))


def test_a_loaded_model_is_frozen_adapter_included(model):
    """Inference needs no gradients; a trainable adapter would also get its own compiled graphs under --compile
    (dynamo guards on requires_grad), apart from the backbone blocks it copies."""
    assert not any(p.requires_grad for p in model.pipeline.denoiser.parameters())


def test_propagate_streams_frames_in_order_with_input_timing(model, clip):
    options = PropagationOptions(task=Task.EDIT, steps=1)
    events = []
    frames = list(model.propagate(clip, options, on_progress=events.append))
    assert [f.index for f in frames] == list(range(40))
    assert all(f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8 and f.mask.shape == (H, W) for f in frames)
    assert [f.pts for f in frames] == [i * 512 for i in range(40)]
    assert [(e.chunk, e.chunks, e.step) for e in events] == [(1, 2, 1), (2, 2, 1)]


def test_unset_chunk_and_overlap_come_from_the_variant_and_given_ones_win(model, clip, monkeypatch):
    from dataclasses import replace

    spec = model.variant.spec
    defaults = replace(spec.defaults, chunk=64, overlap=4)
    monkeypatch.setattr(model, "variant", replace(model.variant, spec=replace(spec, defaults=defaults)))
    resolved = model.resolve(PropagationOptions(task=Task.EDIT))
    assert (resolved.chunk, resolved.overlap, resolved.steps) == (64, 4, spec.defaults.steps)
    given = model.resolve(PropagationOptions(task=Task.EDIT, chunk=32, overlap=8, steps=2, guidance=3.0))
    assert (given.chunk, given.overlap, given.steps, given.guidance) == (32, 8, 2, 3.0)
    events = []
    list(model.propagate(clip, PropagationOptions(task=Task.EDIT, steps=1), on_progress=events.append))
    assert {e.chunks for e in events} == {1}  # 40 frames: one 64-frame chunk, where the old fixed 32 made two
    with pytest.raises(OptionError, match="smaller than --chunk"):
        model.resolve(PropagationOptions(task=Task.EDIT, overlap=64))


def test_each_chunk_is_conditioned_on_the_previous_chunks_generated_frame(model, clip, monkeypatch):
    calls = []
    original = model.pipeline.sample_chunk

    def spy(**kwargs):
        result = original(**kwargs)
        calls.append((kwargs["condition"].clone(), result.latents.clone()))
        return result

    monkeypatch.setattr(model.pipeline, "sample_chunk", spy)
    list(model.propagate(clip, PropagationOptions(task=Task.REMOVE, steps=1, chunk=32, overlap=8)))
    assert len(calls) == 2
    (_, first_latents), (second_condition, _) = calls
    expected = model.pipeline.conditioning_from_latent(first_latents[24])  # chunk 2 starts at frame 24
    torch.testing.assert_close(second_condition, expected, atol=0, rtol=0)


def test_composite_takes_unmodified_pixels_from_the_source(model, clip, monkeypatch):
    # Force the MPD to say "nothing modified": the composite must then be the source itself.
    original = model.pipeline.sample_chunk

    def unmodified(**kwargs):
        result = original(**kwargs)
        result.mask.zero_()
        return result

    monkeypatch.setattr(model.pipeline, "sample_chunk", unmodified)
    frames = list(model.propagate(clip, PropagationOptions(steps=1, composite=True)))
    from genprop_cli.video_io import iter_frames

    source = [f.rgb for f in iter_frames(clip.video)]
    np.testing.assert_array_equal(np.stack([f.rgb for f in frames]), np.stack(source))


def test_frame_limit_is_checked_before_any_work(model, clip, monkeypatch):
    limits = Limits(max_pixels=4096, multiple_of=8, max_frames=10)
    spec = model.variant.spec.__class__(**{**model.variant.spec.__dict__, "limits": limits})
    monkeypatch.setattr(model, "variant", model.variant.__class__(**{**model.variant.__dict__, "spec": spec}))
    with pytest.raises(OptionError, match="at most 10"):
        next(model.propagate(clip, PropagationOptions()))


def hub_registry(tmp_path: Path, commit: str) -> Path:
    """weights.toml whose random-tiny backbone and adapter come from the Hub (pinned) instead of the package."""
    text = (ROOT / "weights.toml").read_text()
    text = text.replace('source = "package:random-tiny/backbone"', f'source = "hf://tiny-org/random-tiny@{commit}"')
    text = text.replace(
        'source = "package:random-tiny/adapter.safetensors"',
        f'source = "hf://tiny-org/random-tiny@{commit}"\nfilename = "adapter.safetensors"',
    )
    path = tmp_path / "weights.toml"
    path.write_text(text)
    return path


def test_model_loads_from_a_prepopulated_hub_cache_offline_and_a_bad_blob_fails(tmp_path, monkeypatch, clip):
    commit = "ab" * 20
    files = {
        str(p.relative_to(assets_dir() / "random-tiny" / "backbone")): p.read_bytes()
        for p in (assets_dir() / "random-tiny" / "backbone").rglob("*")
        if p.is_file()
    }
    files["adapter.safetensors"] = (assets_dir() / "random-tiny" / "adapter.safetensors").read_bytes()
    cache = tmp_path / "hf-hub"
    snapshot = add_to_hf_cache(cache, "tiny-org/random-tiny", commit, files)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("GENPROP_REGISTRY", str(hub_registry(tmp_path, commit)))
    monkeypatch.setenv("GENPROP_CACHE", str(tmp_path / "hash-cache"))

    model = GenProp.load("random-tiny", device="cpu")
    assert model.variant.backbone_dir == snapshot
    assert Path(model.variant.adapter_file).resolve().parent.name == "blobs"
    out = render(model, request_for(clip, tmp_path / "out.mp4", PropagationOptions(steps=1)))
    assert out.frames == 40

    blob = (snapshot / "unet" / "diffusion_pytorch_model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    blob.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=re.escape("unet/diffusion_pytorch_model.safetensors")):
        GenProp.load("random-tiny", device="cpu")


def test_clip_open_accepts_an_array_of_the_right_shape(tmp_path):
    video = make_clip(tmp_path / "c.mp4", width=W, height=H, frames=3, audio=None)
    assert Clip.open(video, np.zeros((H, W, 3), np.uint8)).first_frame.shape == (H, W, 3)
    with pytest.raises(OptionError, match="uint8"):
        Clip.open(video, np.zeros((W, H, 3), np.uint8))
    Image.fromarray(pattern_frame(0, W, H)).save(tmp_path / "e.png")
    assert Clip.open(video, tmp_path / "e.png").notes == ()


def test_a_clip_held_in_memory_propagates_like_one_read_from_a_file(model, tmp_path):
    video = make_clip(tmp_path / "c.mp4", width=W, height=H, frames=12, audio=None)
    from genprop_cli.video_io import iter_frames

    decoded = np.stack([f.rgb for f in iter_frames(video)])
    options = PropagationOptions(steps=1, seed=5)
    from_file = list(model.propagate(Clip.open(video, decoded[0]), options))
    from_memory = list(model.propagate(Clip.from_frames(decoded, decoded[0], fps=24), options))
    np.testing.assert_array_equal(np.stack([f.rgb for f in from_file]), np.stack([f.rgb for f in from_memory]))
    assert [f.pts for f in from_memory] == list(range(12))
    with pytest.raises(OptionError, match="uint8"):
        Clip.from_frames(decoded.astype(np.float32), decoded[0])
    in_memory = Clip.from_frames(decoded, decoded[0], fps=24)
    out = render(model, request_for(in_memory, tmp_path / "mem.mp4", options), clip=in_memory)
    assert out.frames == 12 and out.audio_streams == 0


def test_a_later_chunk_reads_the_change_only_where_the_previous_chunk_was_sure_of_an_edit(model, clip, monkeypatch):
    seen, original = [], model.pipeline.sample_chunk

    def sample(**kw):
        result = original(**kw)
        result.mask[:, :, :2] = 0.7  # sure of an edit on the top rows, unsure (0.3) elsewhere
        result.mask[:, :, 2:] = 0.3
        seen.append(kw["change_region"])
        return result

    monkeypatch.setattr(model.pipeline, "sample_chunk", sample)
    list(model.propagate(clip, PropagationOptions(task=Task.EDIT, steps=1, chunk=32, overlap=8)))
    first, second = seen
    assert first is None  # the user's edited frame: all of its change is the edit
    assert second.shape[0] == 1 and (second[:, :2] == 1).all() and (second[:, 2:] == 0).all()


def test_preserve_reaches_the_sampler_and_is_refused_where_it_cannot_work(model, clip, monkeypatch):
    seen = []
    original = model.pipeline.sample_chunk
    monkeypatch.setattr(model.pipeline, "sample_chunk", lambda **kw: seen.append(kw["preserve"]) or original(**kw))
    list(model.propagate(clip, PropagationOptions(task=Task.EDIT, steps=1, preserve=True)))
    assert seen == [True, True]
    seen.clear()  # left unset, the variant's default decides; an explicit False overrides a default of True
    spec = model.variant.spec
    thresholds = {"edit": 0.5, "remove": 0.2, "insert": 0.4, "track": 0.3}
    defaults = dataclasses.replace(spec.defaults, preserve=True, preserve_margin=0, preserve_thresholds=thresholds)
    spec = dataclasses.replace(spec, defaults=defaults)
    monkeypatch.setattr(model, "variant", dataclasses.replace(model.variant, spec=spec))
    resolved = model.resolve(PropagationOptions(task=Task.REMOVE))
    assert (resolved.preserve_margin, resolved.preserve_threshold) == (0, 0.2)
    assert {task.value: model.resolve(PropagationOptions(task=task)).preserve_threshold for task in Task} == thresholds
    assert model.resolve(PropagationOptions(task=Task.REMOVE, preserve_threshold=0.6)).preserve_threshold == 0.6
    list(model.propagate(clip, PropagationOptions(task=Task.EDIT, steps=1)))
    list(model.propagate(clip, PropagationOptions(task=Task.EDIT, steps=1, preserve=False)))
    assert seen == [True, True, False, False]
    wan = GenProp.load("random-tiny-wan", device="cpu")
    with pytest.raises(OptionError, match="--preserve is not available for wan variants"):
        next(wan.propagate(clip, PropagationOptions(task=Task.EDIT, steps=1, preserve=True)))


def test_a_task_the_adapter_was_not_trained_for_is_refused_before_any_work(model, clip, tmp_path, monkeypatch):
    adapter = model.pipeline.denoiser.adapter
    monkeypatch.setattr(adapter, "config", dataclasses.replace(adapter.config, tasks=("edit",)))
    monkeypatch.setattr(model.pipeline, "sample_chunk", lambda **kw: pytest.fail("sampled despite the unknown task"))
    with pytest.raises(WeightsError, match="not trained for the 'remove' task"):
        next(model.propagate(clip, PropagationOptions(task=Task.REMOVE)))
    with pytest.raises(WeightsError, match="not trained for the 'track' task"):
        render(model, request_for(clip, tmp_path / "out.mp4", PropagationOptions(task=Task.TRACK)))
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(("variant", "dtype"), [("toy", "bf16"), ("toy", "fp16"), ("random-tiny-wan", "bf16")])
def test_half_precision_gives_what_fp32_gives_within_rounding(variant, dtype):
    """The real variants run in fp16 (SVD-XT) and bf16 (Wan 2.2) on a GPU; the same code in half precision
    on the CPU must stay a rounding error away from fp32, with the adapter, the hooks and --preserve (SVD)
    or --composite (Wan) in the path."""
    frames = np.stack([pattern_frame(i, W, H) for i in range(12)])
    edited = frames[0].copy()
    edited[16:40, 24:56] = (200, 40, 40)
    clip = Clip.from_frames(frames, edited, fps=24)
    svd = variant == "toy"
    options = PropagationOptions(task=Task.EDIT, steps=2, seed=3, preserve=svd, composite=not svd)
    torch_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    outputs = {}
    for d in ("fp32", dtype):
        model = GenProp.load(variant, device="cpu", dtype=d)
        assert next(model.pipeline.denoiser.adapter.parameters()).dtype == torch_dtypes[d]
        outputs[d] = np.stack([f.rgb for f in model.propagate(clip, options)]).astype(np.float64)
    mse = ((outputs["fp32"] - outputs[dtype]) ** 2).mean()
    assert 10 * np.log10(255**2 / max(mse, 1e-12)) > 35
