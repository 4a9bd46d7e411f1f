"""benchmarks/bench_real_size.py is run only when a session is lent a GPU; its --tiny mode runs the same code
here so that a short GPU window is not spent finding a broken script."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real_size.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))  # as when run as a script: its sibling real_size_models imports
    spec = importlib.util.spec_from_file_location("bench_real_size", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]
    sys.path.remove(str(SCRIPT.parent))


def test_tiny_run_measures_both_families_and_writes_its_records(bench, tmp_path):
    out = tmp_path / "records.json"
    records = bench.main(["--tiny", "--device", "cpu", "--repeats", "3", "--compile", "off", "--json", str(out)])
    assert [r["family"] for r in records] == ["svd", "wan"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(records))
    for r in records:
        assert 1 <= r["N"] < r["M"]
        assert r["full_over_bare"] > 1.05, "the SCE and MPD run real blocks: the full step must cost more"
        assert r["adapter_params_M"] > 0 and r["backbone_params_M"] > r["adapter_params_M"] / 2


def test_real_size_inputs_have_the_shapes_the_pipelines_pass(bench):
    """Shapes only (meta device): SVD-XT at 1024x576, 32 frames; Wan 2.2 TI2V-5B at 1280x704, 65 frames."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel, WanTransformer3DModel

    work = bench.real_workloads()
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()
        wan = WanTransformer3DModel(**bench.WAN_TI2V_5B)
    inputs, source = bench.denoiser_inputs(work["svd"], unet, torch.device("meta"))
    assert inputs["sample"].shape == (2, 32, 8, 72, 128) and source.shape == (2, 32, 4, 72, 128)
    inputs, source = bench.denoiser_inputs(work["wan"], wan, torch.device("meta"))
    assert inputs["hidden_states"].shape == (2, 48, 17, 44, 80) and source.shape == (2, 48, 17, 44, 80)
    assert inputs["timestep"].shape == (2, 17 * 22 * 40)  # per-token timesteps: 14960 tokens
    assert inputs["encoder_hidden_states"].shape == (2, 512, 4096)
    assert sum(p.numel() for p in wan.parameters()) / 1e9 == pytest.approx(5.0, abs=0.1)  # TI2V-5B
    assert sum(p.numel() for p in unet.parameters()) / 1e9 == pytest.approx(1.52, abs=0.02)  # SVD-XT's U-Net


def test_real_size_components_have_the_published_sizes(bench):
    """The end-to-end benchmark's other components (meta device: shapes only): SVD-XT's VAE and ViT-H/14
    image encoder, Wan's UMT5-XXL text encoder; the Wan 2.2 VAE builds with its 48-channel, 16x layout."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    import real_size_models as real

    def billions(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e9

    with torch.device("meta"):
        assert billions(AutoencoderKLTemporalDecoder(**real.SVD_VAE)) == pytest.approx(0.0977, abs=0.001)
        assert billions(CLIPVisionModelWithProjection(CLIPVisionConfig(**real.VIT_H_14))) == pytest.approx(0.632, abs=0.002)
        assert billions(UMT5EncoderModel(UMT5Config(**real.UMT5_XXL))) == pytest.approx(5.68, abs=0.01)
        vae = AutoencoderKLWan(**real.WAN22_VAE)
    assert (vae.config.z_dim, vae.config.scale_factor_spatial, vae.config.patch_size) == (48, 16, 2)


@pytest.mark.parametrize(("variant", "family", "n", "adapter_b", "backbone_b"),
                         [("svd-xt", "svd", 5, 0.712, 1.525), ("wan-ti2v-5b", "wan", 8, 1.559, 5.0)])
def test_genprop_wraps_the_real_size_pipelines(bench, variant, family, n, adapter_b, backbone_b):
    """The whole real-size variant, built the way the end-to-end benchmark builds it and wrapped by GenProp's
    pipeline, on the meta device: the default adapter's size (docs/training.md quotes these)."""
    import torch

    import real_size_models as real
    from genprop_cli.families import sampler_class

    meta = torch.device("meta")
    diffusers_pipe = real.build_real_size(variant, meta, torch.bfloat16)
    with meta:  # the adapter's copies and new layers on the meta device too
        pipe = sampler_class(family)(diffusers_pipe, device=meta)
    adapter = pipe.denoiser.adapter
    assert adapter.config.sce_blocks == n
    assert sum(p.numel() for p in adapter.parameters()) / 1e9 == pytest.approx(adapter_b, abs=0.002)
    assert sum(p.numel() for p in pipe.backbone.denoiser.parameters()) / 1e9 == pytest.approx(backbone_b, abs=0.01)
