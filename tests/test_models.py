"""GenProp modules on a tiny SVD-architecture backbone: zero-init equivalence, frozen backbone, save/load."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from mpd_checks import full_and_variant

from genprop_cli.config import Task
from genprop_cli.errors import WeightsError
from genprop_cli.families import backbone_for
from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser

B, F, H, W = 2, 5, 8, 12


@pytest.fixture(scope="module")
def unet():
    return build_random_tiny_pipeline(seed=0).unet.eval()


def make_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(B, F, 8, H, W, generator=g),
        timestep=torch.tensor([0.7, -0.3]),
        encoder_hidden_states=torch.randn(B, 1, 32, generator=g),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * B),
    ), torch.randn(B, F, 4, H, W, generator=g)


def wrap(unet, sce_blocks: int):
    unet = copy.deepcopy(unet)
    backbone = backbone_for("svd", unet)
    adapter = GenPropAdapter(backbone, AdapterConfig(family="svd", sce_blocks=sce_blocks))
    return unet, GenPropDenoiser(backbone, adapter)


@pytest.mark.parametrize("sce_blocks", [1, 2, 3])
def test_zero_initialised_genprop_equals_bare_backbone(unet, sce_blocks):
    inputs, source = make_inputs()
    with torch.no_grad():
        bare = unet(**inputs, return_dict=False)[0]
        _, denoiser = wrap(unet, sce_blocks)
        out = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 3]))
    # Exact: zero residuals and a zero task embedding add exact zeros. Tolerance 0 would hold too; 1e-6 guards
    # against a future kernel choice that reorders float additions.
    torch.testing.assert_close(out.sample, bare, atol=1e-6, rtol=0)
    assert out.mask_logits.shape == (B, F, 1, H, W)


def test_nonzero_injection_or_task_embedding_changes_the_output(unet):
    inputs, source = make_inputs()
    _, denoiser = wrap(unet, 3)
    with torch.no_grad():
        base = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 0])).sample
        denoiser.adapter.task_embedding.table.weight[1].fill_(0.5)
        by_task = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([1, 1])).sample
        assert not torch.allclose(by_task, base)
        denoiser.adapter.task_embedding.table.weight.zero_()
        for inj in denoiser.adapter.sce.injections:
            torch.nn.init.normal_(inj.weight, std=0.05)
        with_sce = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 0])).sample
        other_source = denoiser(**inputs, source_latents=source.flip(1), task_ids=torch.tensor([0, 0])).sample
        off = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 0]), sce_scale=0.0).sample
    assert not torch.allclose(with_sce, base)
    assert not torch.allclose(other_source, with_sce), "the SCE must read the original video's latents"
    torch.testing.assert_close(off, base, atol=1e-6, rtol=0)


def test_without_predict_mask_the_mpd_is_skipped_and_the_prediction_is_unchanged(unet):
    inputs, source = make_inputs()
    _, denoiser = wrap(unet, 2)
    full, lean, rows = full_and_variant(denoiser, inputs, source, predict_mask=False)
    assert len(rows) == 1, "the MPD ran although its mask was not asked for"
    assert lean.mask_logits is None
    assert torch.equal(lean.sample, full.sample)


def test_mask_samples_runs_the_mpd_on_the_last_samples_only(unet):
    inputs, source = make_inputs()  # batch 2: under CFG, the unconditional then the conditional branch
    _, denoiser = wrap(unet, 2)
    full, last, rows = full_and_variant(denoiser, inputs, source, mask_samples=1)
    assert rows == [B * F, F]  # frames are folded into the U-Net's batch
    assert last.mask_logits.shape == (1, F, 1, H, W)
    torch.testing.assert_close(last.mask_logits, full.mask_logits[-1:], atol=1e-5, rtol=1e-5)
    assert torch.equal(last.sample, full.sample)


def test_only_adapter_parameters_train_and_backbone_gets_no_gradient(unet):
    bare, denoiser = wrap(unet, 3)
    backbone_before = {k: v.clone() for k, v in bare.state_dict().items()}
    trainable = {n for n, p in denoiser.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("adapter.") for n in trainable)
    assert not any(p.requires_grad for p in bare.parameters())
    prefixes = {n.split(".")[1] for n in trainable}
    assert prefixes == {"sce", "mpd", "task_embedding"}

    inputs, source = make_inputs()
    out = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([1, 2]))
    (out.sample.square().mean() + out.mask_logits.sigmoid().mean()).backward()
    grads = {n: p.grad for n, p in denoiser.adapter.named_parameters()}
    # At zero init the injections and the MPD receive gradients first (ControlNet behaviour).
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("sce.injections"))
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("mpd."))
    assert all(p.grad is None for p in bare.parameters())
    torch.optim.SGD([p for p in denoiser.parameters() if p.requires_grad], lr=0.1).step()
    for k, v in bare.state_dict().items():
        assert torch.equal(v, backbone_before[k]), k


def test_detach_restores_the_bare_backbone(unet):
    inputs, source = make_inputs()
    bare, denoiser = wrap(unet, 3)
    for inj in denoiser.adapter.sce.injections:
        torch.nn.init.normal_(inj.weight, std=0.05)
    with torch.no_grad():
        reference = unet(**inputs, return_dict=False)[0]
        hooked_without_call = bare(**inputs, return_dict=False)[0]  # hooks pass through outside a GenProp call
        denoiser.detach()
        detached = bare(**inputs, return_dict=False)[0]
    torch.testing.assert_close(hooked_without_call, reference, atol=0, rtol=0)
    torch.testing.assert_close(detached, reference, atol=0, rtol=0)


def test_adapter_save_load_round_trip(unet, tmp_path):
    _, denoiser = wrap(unet, 2)
    with torch.no_grad():
        for p in denoiser.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "adapter.safetensors"
    denoiser.adapter.save(path)
    assert path.exists() and not list(tmp_path.glob(".*partial"))

    fresh = copy.deepcopy(unet)
    loaded = GenPropAdapter.load(path, backbone_for("svd", fresh))
    assert loaded.config == AdapterConfig(family="svd", sce_blocks=2)
    for (n, a), (_, b) in zip(denoiser.adapter.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    inputs, source = make_inputs()
    with torch.no_grad():
        expected = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([1, 1]))
        got = GenPropDenoiser(backbone_for("svd", fresh), loaded)(**inputs, source_latents=source, task_ids=torch.tensor([1, 1]))
    torch.testing.assert_close(got.sample, expected.sample)
    torch.testing.assert_close(got.mask_logits, expected.mask_logits)


def test_loading_rejects_foreign_or_mismatched_files(unet, tmp_path):
    from safetensors.torch import save_file

    not_adapter = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(not_adapter))
    with pytest.raises(WeightsError, match="not a GenProp adapter"):
        GenPropAdapter.load(not_adapter, backbone_for("svd", copy.deepcopy(unet)))

    _, denoiser = wrap(unet, 3)
    path = tmp_path / "three.safetensors"
    denoiser.adapter.save(path)
    state = dict(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(path)))
    state.pop(next(iter(state)))
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken), metadata=AdapterConfig(family="svd", sce_blocks=3).to_metadata())
    with pytest.raises(WeightsError, match="does not fit"):
        GenPropAdapter.load(broken, backbone_for("svd", copy.deepcopy(unet)))

    pickle_like = tmp_path / "adapter.bin"
    pickle_like.write_bytes(b"\x80\x04")
    with pytest.raises(WeightsError, match="only .safetensors"):
        GenPropAdapter.load(pickle_like, backbone_for("svd", copy.deepcopy(unet)))


def test_task_rows_come_from_the_adapters_own_task_list(unet):
    backbone = backbone_for("svd", copy.deepcopy(unet))
    default = GenPropAdapter(backbone, AdapterConfig(family="svd", sce_blocks=1))
    assert [default.task_id(t) for t in (Task.EDIT, Task.REMOVE, Task.INSERT, Task.TRACK)] == [0, 1, 2, 3]
    # An adapter saved with another order keeps its own rows, whatever order `Task` lists.
    reordered = GenPropAdapter(backbone, AdapterConfig(family="svd", sce_blocks=1, tasks=("track", "edit")))
    assert (reordered.task_id(Task.TRACK), reordered.task_id("edit")) == (0, 1)
    assert reordered.task_embedding.table.num_embeddings == 2
    with pytest.raises(WeightsError, match="not trained for the 'remove' task .it knows: track, edit"):
        reordered.task_id(Task.REMOVE)


def test_sce_copies_first_n_blocks_and_mpd_copies_last(unet):
    _, denoiser = wrap(unet, 2)
    adapter = denoiser.adapter
    for copy_, original in zip(adapter.sce.blocks, list(unet.down_blocks)[:2]):
        assert type(copy_) is type(original) and copy_ is not original
        for (n, a), (_, b) in zip(copy_.state_dict().items(), original.state_dict().items()):
            assert torch.equal(a, b), n
    assert type(adapter.mpd.block) is type(unet.up_blocks[-1])
    assert adapter.sce.blocks[0].resnets[0].spatial_res_block.conv1.weight.data_ptr() != (
        unet.down_blocks[0].resnets[0].spatial_res_block.conv1.weight.data_ptr()
    )


def test_first_frame_change_input_starts_as_a_no_op_and_then_reads_the_change(unet, tmp_path):
    inputs, source = make_inputs()
    change = torch.randn(B, 4, H, W, generator=torch.Generator().manual_seed(5))[:, None].expand(-1, F, -1, -1, -1)
    _, denoiser = wrap(unet, 3)
    with torch.no_grad():
        for p in denoiser.adapter.parameters():  # a trained adapter: its SCE already injects
            p.add_(torch.randn_like(p) * 0.01)
        before = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]))
        denoiser.adapter.add_first_frame_change(denoiser.backbone)
        assert denoiser.adapter.config.first_frame_change
        added = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]), first_frame_change=change)
        torch.testing.assert_close(added.sample, before.sample, atol=1e-6, rtol=0)
        torch.testing.assert_close(added.mask_logits, before.mask_logits, atol=1e-6, rtol=0)

        torch.nn.init.normal_(denoiser.adapter.sce.change_projection.weight, std=0.05)
        read = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]), first_frame_change=change)
        other = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]), first_frame_change=-change)
    assert not torch.allclose(read.mask_logits, other.mask_logits), "the MPD must see the first frame's change"
    assert not torch.allclose(read.sample, other.sample)
    with pytest.raises(RuntimeError, match="exactly when the adapter reads it"):
        denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]))

    path = tmp_path / "change.safetensors"
    denoiser.adapter.save(path)
    loaded = GenPropAdapter.load(path, backbone_for("svd", copy.deepcopy(unet)))
    assert loaded.config == AdapterConfig(family="svd", sce_blocks=3, first_frame_change=True)
    torch.testing.assert_close(loaded.sce.change_projection.weight, denoiser.adapter.sce.change_projection.weight)


def test_adapters_saved_before_the_change_input_load_without_it(unet):
    old = {"genprop": '{"format": "genprop-adapter", "version": 1, "family": "svd", "sce_blocks": 2, '
                      '"tasks": ["edit", "remove", "insert", "track"]}'}  # fmt: skip
    config = AdapterConfig.from_metadata(old, Path("old.safetensors"))
    assert config == AdapterConfig(family="svd", sce_blocks=2) and not config.first_frame_change
    assert config.mask_inside_weight == 1.0  # nor the inside weight: their masks read as they always did
    adapter = GenPropAdapter(backbone_for("svd", copy.deepcopy(unet)), config)
    assert adapter.sce.change_projection is None
    assert not any("change" in k for k in adapter.state_dict())


def test_mask_probability_takes_the_training_inside_weight_back_out(unet, tmp_path):
    adapter = GenPropAdapter(backbone_for("svd", copy.deepcopy(unet)), AdapterConfig(family="svd", sce_blocks=1))
    logits = torch.tensor([math.log(4.0), 0.0, -3.0])
    torch.testing.assert_close(adapter.mask_probability(logits), torch.sigmoid(logits))  # weight 1: plain sigmoid
    adapter.set_mask_inside_weight(4.0)
    # w = 4 puts the optimum at logit(q) + log 4: a raw log 4 is an even chance, a raw 0.5 a 1 in 5 chance
    torch.testing.assert_close(adapter.mask_probability(logits), torch.tensor([0.5, 0.2, 1 / (1 + 4 * math.exp(3))]))
    path = tmp_path / "weighted.safetensors"
    adapter.save(path)
    assert GenPropAdapter.load(path, backbone_for("svd", copy.deepcopy(unet))).config.mask_inside_weight == 4.0


def test_an_adapter_with_a_bad_inside_weight_is_refused(tmp_path):
    bad = {"genprop": '{"format": "genprop-adapter", "version": 1, "family": "svd", "sce_blocks": 2, '
                      '"tasks": ["edit"], "mask_inside_weight": 0}'}  # fmt: skip
    with pytest.raises(WeightsError, match="bad.safetensors is not a GenProp adapter file"):
        AdapterConfig.from_metadata(bad, Path("bad.safetensors"))


def test_the_mpd_reads_the_first_frame_change_itself_without_touching_the_prediction(unet):
    inputs, source = make_inputs()
    change = torch.randn(B, F, 4, H, W, generator=torch.Generator().manual_seed(6))
    _, denoiser = wrap(unet, 2)
    denoiser.adapter.add_first_frame_change(denoiser.backbone)
    with torch.no_grad():
        torch.nn.init.normal_(denoiser.adapter.mpd.change_projection.weight, std=0.1)
        a = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]), first_frame_change=change)
        b = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]), first_frame_change=-change)
        last = denoiser(**inputs, source_latents=source, task_ids=torch.tensor([0, 1]), first_frame_change=change,
                        mask_samples=1)  # fmt: skip
    torch.testing.assert_close(a.sample, b.sample, atol=1e-6, rtol=0)  # the SCE's projection is still zero
    assert not torch.allclose(a.mask_logits, b.mask_logits)
    torch.testing.assert_close(last.mask_logits, a.mask_logits[-1:], atol=1e-5, rtol=0)
