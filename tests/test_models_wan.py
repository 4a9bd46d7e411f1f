"""GenProp modules on a tiny Wan DiT (2.1 I2V layout and 2.2 TI2V layout with per-token timesteps):
zero-init equivalence, frozen backbone, detach, mask unpatchification, save/load across families."""

from __future__ import annotations

import copy

import pytest
import torch

from mpd_checks import full_and_variant

from genprop_cli.errors import WeightsError
from genprop_cli.families import backbone_for
from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
from genprop_cli.families.wan.tiny import build_random_tiny_wan_pipeline
from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser

B, C, F, H, W = 2, 16, 3, 8, 12  # latent batch, channels (Wan 2.1's VAE; 2.2's has 48), frames, height, width
LAYERS = 4


@pytest.fixture(scope="module", params=["i2v", "ti2v"])
def transformer(request):
    return build_random_tiny_wan_pipeline(seed=0, ti2v=request.param == "ti2v").transformer.eval()


def make_inputs(transformer, seed: int = 0) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    config = transformer.config
    tokens = F * (H // 2) * (W // 2)
    ti2v = config.image_dim is None
    timestep = torch.rand(B, tokens, generator=g) * 1000 if ti2v else torch.tensor([700.0, 300.0])
    inputs = dict(
        hidden_states=torch.randn(B, config.in_channels, F, H, W, generator=g),
        timestep=timestep,
        encoder_hidden_states=torch.randn(B, 7, config.text_dim, generator=g),
        encoder_hidden_states_image=None if ti2v else torch.randn(B, 5, config.image_dim, generator=g),
    )
    return inputs, torch.randn(B, config.out_channels, F, H, W, generator=g)


def wrap(transformer, sce_blocks: int):
    transformer = copy.deepcopy(transformer)
    backbone = backbone_for("wan", transformer)
    adapter = GenPropAdapter(backbone, AdapterConfig(family="wan", sce_blocks=sce_blocks))
    return transformer, GenPropDenoiser(backbone, adapter)


@pytest.mark.parametrize("sce_blocks", [1, 2, LAYERS])
def test_zero_initialised_genprop_equals_bare_wan(transformer, sce_blocks):
    inputs, source = make_inputs(transformer)
    with torch.no_grad():
        bare = transformer(**inputs, return_dict=False)[0]
        _, denoiser = wrap(transformer, sce_blocks)
        out = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 3]))
    assert torch.equal(out.sample, bare)  # zero residuals and a zero task vector add exact zeros
    assert out.mask_logits.shape == (B, F, 1, H, W)


def test_without_predict_mask_the_mpd_block_is_skipped_and_the_prediction_is_unchanged(transformer):
    inputs, source = make_inputs(transformer)
    _, denoiser = wrap(transformer, 2)
    full, lean, rows = full_and_variant(denoiser, inputs, source, predict_mask=False)
    assert len(rows) == 1 and lean.mask_logits is None
    assert torch.equal(lean.sample, full.sample)


def test_mask_samples_runs_the_mpd_on_the_last_samples_only(transformer):
    inputs, source = make_inputs(transformer)
    _, denoiser = wrap(transformer, 2)
    full, last, rows = full_and_variant(denoiser, inputs, source, mask_samples=1)
    assert rows == [B, 1]
    assert last.mask_logits.shape == (1, F, 1, H, W)
    torch.testing.assert_close(last.mask_logits, full.mask_logits[-1:], atol=1e-5, rtol=1e-5)
    assert torch.equal(last.sample, full.sample)


def test_injection_at_depth_k_and_task_embedding_change_the_output(transformer):
    inputs, source = make_inputs(transformer)
    _, denoiser = wrap(transformer, 2)
    with torch.no_grad():
        base = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 0])).sample
        denoiser.adapter.task_embedding.table.weight[1].fill_(0.05)
        by_task = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([1, 1])).sample
        same_task = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 0])).sample
        denoiser.adapter.sce.injections[1].weight.normal_(0, 0.05)
        injected = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 0])).sample
        other_source = denoiser(**inputs, source_latents=source.flip(2), task_ids=torch.tensor([0, 0])).sample
    assert torch.equal(same_task, base)
    assert not torch.allclose(by_task, base)
    assert not torch.allclose(injected, base)
    assert not torch.allclose(other_source, injected)  # the SCE reads the original video's latents


def test_only_the_adapter_trains_and_the_backbone_stays_bit_identical(transformer):
    inputs, source = make_inputs(transformer)
    bare, denoiser = wrap(transformer, 2)
    before = {k: v.clone() for k, v in bare.state_dict().items()}
    for inj in denoiser.adapter.sce.injections:  # start away from zero so every adapter part gets a gradient
        torch.nn.init.normal_(inj.weight, 0, 0.02)
    optimizer = torch.optim.SGD(denoiser.adapter.parameters(), lr=0.1)
    out = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([1, 2]))
    (out.sample.square().mean() + out.mask_logits.square().mean()).backward()
    assert all(p.grad is None for p in bare.parameters())
    assert not any(p.requires_grad for p in bare.parameters())
    grads = {n: p.grad for n, p in denoiser.adapter.named_parameters()}
    for prefix in ("sce.blocks.0", "sce.injections.1", "sce.source_projection", "mpd.head", "task_embedding"):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in bare.state_dict().items())


def test_detach_restores_the_bare_wan(transformer):
    inputs, source = make_inputs(transformer)
    with torch.no_grad():
        reference = transformer(**inputs, return_dict=False)[0]
        bare, denoiser = wrap(transformer, 2)
        for inj in denoiser.adapter.sce.injections:
            torch.nn.init.normal_(inj.weight, 0, 0.1)
        assert not torch.allclose(denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 0])).sample, reference)
        denoiser.detach()
        assert torch.equal(bare(**inputs, return_dict=False)[0], reference)


def test_mask_logits_unpatchify_in_the_transformers_own_token_order(transformer):
    """Token t of patch (f, i, j) covers latent pixels (f, 2i..2i+1, 2j..2j+1): a per-pixel map turned into
    tokens the way Wan patchifies comes back unchanged."""
    backbone = backbone_for("wan", transformer)
    pt, ph, pw = transformer.config.patch_size
    pixels = torch.arange(B * F * H * W, dtype=torch.float32).reshape(B, F, H, W)
    patches = pixels.reshape(B, F // pt, pt, H // ph, ph, W // pw, pw).permute(0, 1, 3, 5, 2, 4, 6)
    tokens = patches.reshape(B, -1, pt * ph * pw)  # (f, i, j) token order = Conv3d output flatten(2)
    call = type("Call", (), {"source_latents": torch.zeros(B, C, F, H, W)})()
    assert torch.equal(backbone.mask_logits_to_frames(tokens, call)[:, :, 0], pixels)


def test_sce_copies_the_first_n_blocks_and_default_depth_is_a_quarter(transformer):
    backbone = backbone_for("wan", transformer)
    assert backbone.num_blocks == LAYERS and backbone.default_sce_blocks == 1
    adapter = GenPropAdapter(backbone, AdapterConfig(family="wan", sce_blocks=3))
    for copy_, original in zip(adapter.sce.blocks, transformer.blocks[:3], strict=True):
        assert copy_ is not original
        assert all(torch.equal(a, b) for a, b in zip(copy_.state_dict().values(), original.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(adapter.mpd.block.state_dict().values(), transformer.blocks[-1].state_dict().values()))
    with pytest.raises(ValueError, match="1..4"):
        GenPropAdapter(backbone, AdapterConfig(family="wan", sce_blocks=5))


def test_wan_adapter_round_trips_and_is_refused_by_an_svd_backbone(transformer, tmp_path):
    backbone = backbone_for("wan", transformer)
    adapter = GenPropAdapter(backbone, AdapterConfig(family="wan", sce_blocks=2))
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    path = tmp_path / "wan.safetensors"
    adapter.save(path)
    loaded = GenPropAdapter.load(path, backbone_for("wan", copy.deepcopy(transformer)))
    assert loaded.config == adapter.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), adapter.state_dict().values()))
    unet = build_random_tiny_pipeline(seed=0).unet
    with pytest.raises(WeightsError, match="'wan' backbone"):
        GenPropAdapter.load(path, backbone_for("svd", unet))


def test_an_adapter_reading_the_first_frame_change_is_refused_on_wan(transformer):
    backbone = backbone_for("wan", transformer)
    with pytest.raises(WeightsError, match="wan backbones do not give the adapter the first frame's change"):
        GenPropAdapter(backbone, AdapterConfig(family="wan", sce_blocks=2, first_frame_change=True))
    adapter = GenPropAdapter(backbone, AdapterConfig(family="wan", sce_blocks=2))
    with pytest.raises(WeightsError, match="first frame's change"):
        adapter.add_first_frame_change(backbone)
    assert not adapter.config.first_frame_change
