"""Training the toy backbone from scratch: both stages learn, and the result loads like any SVD checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from genprop_cli.errors import InputError, OptionError
from genprop_cli.families.svd.sampler import GenPropSVDPipeline
from genprop_cli.toy import write_davis
from genprop_cli.training.backbone import (
    BackboneArchitecture,
    BackboneTrainConfig,
    build_components,
    train_backbone,
    train_vae,
)
from genprop_cli.training.objective import to_model_frames

SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy-data")
    write_davis(root, 3, seed=0, frames=12, size=SIZE)
    return root


def config(data: Path, output: Path, **overrides) -> BackboneTrainConfig:
    base = dict(data=str(data), output=str(output), frames=8, size=SIZE, vae_steps=2, unet_steps=2, vae_frames=4,
                batch_size=1, log_every=1)
    return BackboneTrainConfig(**{**base, **overrides})


def test_trained_backbone_loads_through_the_inference_pipeline(dataset, tmp_path):
    result = train_backbone(config(dataset, tmp_path / "run", lr=1e-2, warmup_steps=0))
    folder = Path(result.output)
    assert (folder / "model_index.json").is_file()
    pipe = GenPropSVDPipeline.from_pretrained(folder, None, device=torch.device("cpu"), dtype=torch.float32)
    assert pipe.vae.config.scaling_factor == pytest.approx(result.scaling_factor, rel=1e-6)
    assert pipe.unet.config.in_channels == 2 * BackboneArchitecture().latent_channels
    # Saved weights are the trained ones, not a fresh initialisation.
    _, fresh_unet, *_ = build_components(BackboneArchitecture(), 8, seed=0)
    trained = dict(pipe.unet.named_parameters())
    assert any(not torch.allclose(p.float(), trained[n].float(), atol=1e-3) for n, p in fresh_unet.named_parameters())
    log = [json.loads(line) for line in (tmp_path / "run" / "backbone-log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["vae", "vae", "unet", "unet"]
    assert all(np.isfinite(r["loss"]) for r in log)


def test_a_per_frame_vae_with_fewer_norm_groups_trains_and_loads(dataset, tmp_path):
    arch = BackboneArchitecture(vae_channels=(16, 32, 32), vae_decoder="2d", vae_norm_groups=8, vae_mid_attention=False)
    result = train_backbone(config(dataset, tmp_path / "run", architecture=arch))
    pipe = GenPropSVDPipeline.from_pretrained(Path(result.output), None, device=torch.device("cpu"), dtype=torch.float32)
    assert type(pipe.vae).__name__ == "AutoencoderKL"
    assert {m.num_groups for m in pipe.vae.modules() if isinstance(m, torch.nn.GroupNorm)} == {8}
    assert not any(isinstance(m, Attention) for m in pipe.vae.modules())
    frames = torch.rand(5, 3, SIZE, SIZE) * 2 - 1
    assert pipe.decode_latents(pipe.encode_frames(frames)).shape == frames.shape


def test_scaling_factor_gives_unit_variance_latents(dataset, tmp_path):
    result = train_backbone(config(dataset, tmp_path / "run"))
    pipe = GenPropSVDPipeline.from_pretrained(Path(result.output), None, device=torch.device("cpu"), dtype=torch.float32)
    from genprop_cli.training.data import open_dataset

    frames = to_model_frames(open_dataset(dataset, "davis").load(0).frames)
    # fp16 storage and another sample of clips: close to 1, not exactly.
    assert 0.6 < float(pipe.encode_frames(frames).std()) < 1.6


def test_vae_stage_reduces_reconstruction_error(dataset, tmp_path):
    cfg = config(dataset, tmp_path, vae_steps=40, vae_lr=2e-3)
    vae, *_ = build_components(cfg.architecture, cfg.frames, seed=0)
    l1s: list[float] = []
    train_vae(vae, cfg, torch.device("cpu"), lambda r: l1s.append(r["l1"]))
    assert np.mean(l1s[-5:]) < 0.7 * np.mean(l1s[:5])


def test_bad_options_are_option_errors(dataset, tmp_path):
    with pytest.raises(OptionError, match="multiple of 16"):
        config(dataset, tmp_path, size=40)
    with pytest.raises(OptionError, match="temporal decoder fixes 32 groups"):
        BackboneArchitecture(vae_norm_groups=8)
    with pytest.raises(OptionError, match="must divide every vae_channels"):
        BackboneArchitecture(vae_channels=(16, 24), vae_decoder="2d", vae_norm_groups=16)
    with pytest.raises(OptionError, match="vae_decoder must be one of"):
        BackboneArchitecture(vae_decoder="3d")
    with pytest.raises(OptionError, match="unknown backbone training option"):
        BackboneTrainConfig.from_dict({"data": "d", "output": "o", "vae_stpes": 3})
    with pytest.raises(InputError, match="clips need 13"):
        train_backbone(config(dataset, tmp_path / "x", frames=13, vae_frames=13))


def _vae_l1s(dataset: Path, output: Path | None, **overrides) -> tuple[list[float], torch.nn.Module]:
    cfg = config(dataset, output or Path("unused"), vae_lr=2e-3, **overrides)
    vae, *_ = build_components(cfg.architecture, cfg.frames, seed=0)
    l1s: list[float] = []
    train_vae(vae, cfg, torch.device("cpu"), lambda r: l1s.append(r["l1"]), output)
    return l1s, vae


def test_bf16_autocast_tracks_float32(dataset):
    fp32, _ = _vae_l1s(dataset, None, vae_steps=12)
    bf16, _ = _vae_l1s(dataset, None, vae_steps=12, mixed_precision="bf16")
    assert bf16[0] == pytest.approx(fp32[0], rel=0.05)  # same data, same weights: rounding only
    assert np.mean(bf16[-4:]) == pytest.approx(np.mean(fp32[-4:]), rel=0.1)
    assert np.mean(bf16[-4:]) < bf16[0]  # and it learns


def test_an_interrupted_stage_resumes_exactly(dataset, tmp_path):
    _, whole = _vae_l1s(dataset, tmp_path / "whole", vae_steps=6, save_every=3, ema_decay=0.9)
    # The same run stopped after its step-3 checkpoint, then started again on the same output folder.
    first, _ = _vae_l1s(dataset, tmp_path / "split", vae_steps=6, save_every=3, ema_decay=0.9)
    from genprop_cli.training.backbone import latest_stage_checkpoint

    later = latest_stage_checkpoint(tmp_path / "split", "vae")
    import shutil

    shutil.rmtree(later)  # drop the step-6 checkpoint: only step 3 is left to resume from
    assert latest_stage_checkpoint(tmp_path / "split", "vae").name == "vae-00000003"
    resumed_l1s, resumed = _vae_l1s(dataset, tmp_path / "split", vae_steps=6, save_every=3, ema_decay=0.9)
    assert len(resumed_l1s) == 3  # steps 4 to 6 only
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_a_checkpoint_of_other_options_is_refused(dataset, tmp_path):
    _vae_l1s(dataset, tmp_path, vae_steps=2, save_every=2)
    with pytest.raises(OptionError, match="other options"):
        _vae_l1s(dataset, tmp_path, vae_steps=4, save_every=2, kl_weight=1e-3)


def test_bf16_on_a_cpu_that_only_emulates_it_is_refused_before_anything_is_written(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("genprop_cli.hardware.cpu_has_native_bf16", lambda: False)
    with pytest.raises(OptionError, match="AVX512-BF16 or AMX.*--mixed-precision no"):
        train_backbone(config(dataset, tmp_path / "run", mixed_precision="bf16"))
    assert not (tmp_path / "run").exists()
