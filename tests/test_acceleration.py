"""Speed/memory options (pipelines/acceleration.py): each leaves the numbers unchanged on the CPU path, and
each misuse is one clear error. The CUDA effect itself (speed, memory) is measured by the benchmarks."""

from __future__ import annotations

import pytest
import torch

from genprop_cli.api import out_of_memory_advice
from genprop_cli.config import PropagationOptions, RuntimeOptions, Task
from genprop_cli.errors import OptionError
from genprop_cli.families import get_family
from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
from genprop_cli.families.wan.sampler import GenPropWanPipeline
from genprop_cli.families.wan.tiny import build_random_tiny_wan_pipeline
from genprop_cli.pipelines.acceleration import (
    EncoderOffload,
    check_runtime,
    compile_blocks,
    enable_vae_tiling,
    offload_denoiser,
    set_attention_backend,
)

CPU = torch.device("cpu")


def wan_pipe(**kwargs) -> GenPropWanPipeline:
    return GenPropWanPipeline(build_random_tiny_wan_pipeline(seed=0), **kwargs)


def chunk(pipe: GenPropWanPipeline):
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(9, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        for inj in pipe.denoiser.adapter.sce.injections:  # a live adapter, so the hooks' effect is in the numbers
            torch.nn.init.normal_(inj.weight, 0, 0.05, generator=torch.Generator().manual_seed(1))
    return pipe.sample_chunk(
        source_latents=pipe.encode_frames(clip), condition=clip[0], anchor=pipe.prepare_anchor(clip[0], "a ball"),
        task=Task.REMOVE, steps=2, guidance=3.0, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def test_group_offloaded_denoiser_gives_the_same_chunk():
    reference = chunk(wan_pipe())
    pipe = wan_pipe()
    offload_denoiser(pipe.transformer, CPU)  # onload to the CPU itself: the hooks run, the numbers must not move
    result = chunk(pipe)
    assert torch.equal(result.latents, reference.latents) and torch.equal(result.mask, reference.mask)


def test_offloaded_encoders_run_on_the_device_and_return_to_cpu_memory():
    reference = chunk(wan_pipe())
    pipe = wan_pipe(runtime=RuntimeOptions(offload="encoders"))
    assert isinstance(pipe.offload, EncoderOffload) and pipe.offload.enabled
    moves = []
    original_to = pipe.text_encoder.to
    pipe.text_encoder.to = lambda *a, **k: moves.append(a) or original_to(*a, **k)
    result = chunk(pipe)
    # onto the execution device for each prompt (the text and the empty negative one), back to CPU memory after
    assert moves == [(CPU,), ("cpu",)] * 2
    assert torch.equal(result.latents, reference.latents)


def test_native_attention_backend_keeps_the_numbers_and_reaches_the_adapter_copies():
    reference = chunk(wan_pipe())
    wan = build_random_tiny_wan_pipeline(seed=0)
    set_attention_backend(wan.transformer, GenPropWanPipeline.capabilities, "native")
    pipe = GenPropWanPipeline(wan)
    backends = {getattr(m.processor, "_attention_backend", None) for m in pipe.denoiser.adapter.modules() if hasattr(m, "processor")}
    assert backends == {"native"} or {str(b) for b in backends} == {"AttentionBackendName.NATIVE"}
    assert torch.equal(chunk(pipe).latents, reference.latents)


def test_misused_options_are_one_clear_error():
    unet = build_random_tiny_pipeline(seed=0)
    svd, wan = get_family("svd").capabilities, get_family("wan").capabilities
    with pytest.raises(OptionError, match=r"--attention-backend applies to backbones whose attention .* \(wan\)"):
        set_attention_backend(unet.unet, svd, "flash")
    with pytest.raises(OptionError, match="--attention-backend nonsense"):
        set_attention_backend(build_random_tiny_wan_pipeline(seed=0).transformer, wan, "nonsense")
    with pytest.raises(OptionError, match=r"--vae-tiling applies to backbones with a tiled VAE \(wan\)"):
        enable_vae_tiling(unet.vae, svd, True)
    with pytest.raises(OptionError, match="--offload must be one of"):
        RuntimeOptions(offload="disk")
    with pytest.raises(OptionError, match="no use on --device cpu"):
        check_runtime(RuntimeOptions(offload="group"), CPU)


def test_wan_vae_tiling_is_switched_on():
    vae = build_random_tiny_wan_pipeline(seed=0).vae
    enable_vae_tiling(vae, get_family("wan").capabilities, True)
    assert vae.use_tiling


def test_out_of_memory_advice_names_the_next_things_to_try():
    advice = out_of_memory_advice(PropagationOptions(task=Task.EDIT, chunk=64))
    assert "--chunk 32" in advice and "--offload" in advice and "--vae-tiling" in advice
    assert "--chunk 16" not in out_of_memory_advice(PropagationOptions(task=Task.EDIT, chunk=32))


@pytest.mark.slow
def test_compile_option_gives_the_same_chunk():
    """--compile through the pipeline: the GenProp hooks run around the compiled blocks (compiles for ~10 s on CPU)."""
    reference = chunk(wan_pipe())
    result = chunk(wan_pipe(runtime=RuntimeOptions(compile=True)))
    torch.testing.assert_close(result.latents, reference.latents, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.mask, reference.mask, atol=1e-4, rtol=1e-4)


def test_compiled_dit_blocks_share_graphs_however_many_carry_hooks():
    """12 blocks, 8 with an SCE injection hook, plus the SCE and MPD copies: a handful of graphs in all.
    Compiling the hooked forwards made one graph per hooked block and hit dynamo's recompile limit (8)."""
    from diffusers import WanTransformer3DModel
    from torch._dynamo.utils import counters

    from genprop_cli.families import backbone_for
    from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=64, ffn_dim=64, num_layers=12, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=256, image_dim=16,
    ).eval()  # fmt: skip
    backbone = backbone_for("wan", transformer)
    adapter = GenPropAdapter(backbone, AdapterConfig("wan", 8))
    with torch.no_grad():
        for inj in adapter.sce.injections:
            torch.nn.init.normal_(inj.weight, std=0.05)
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(2, 36, 3, 8, 8, generator=g), timestep=torch.tensor([500.0, 500.0]),
        encoder_hidden_states=torch.randn(2, 8, 32, generator=g), encoder_hidden_states_image=torch.randn(2, 5, 16, generator=g),
        source_latents=torch.randn(2, 16, 3, 8, 8, generator=g), task_ids=torch.tensor([1, 2]),
    )  # fmt: skip
    with torch.no_grad():
        eager = GenPropDenoiser(backbone, adapter)
        reference = eager(**inputs)
        eager.detach()
        torch._dynamo.reset()
        counters.clear()
        compile_blocks([*backbone.all_blocks(), *adapter.blocks()])
        denoiser = GenPropDenoiser(backbone, adapter)
        with pytest.raises(RuntimeError, match="already has hooks"):  # compiled after attaching would bypass them
            compile_blocks([backbone.all_blocks()[0]])
        outputs = [denoiser(**inputs, predict_mask=p) for p in (False, True, False, True)]
    assert counters["stats"]["unique_graphs"] <= 4
    torch.testing.assert_close(outputs[-1].sample, reference.sample, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs[-1].mask_logits, reference.mask_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compile_and_group_offload_compose():
    """--compile with --offload group (a likely pair on a small GPU): the offloading hooks wrap the GenProp
    hooks, which wrap the compiled blocks; onloading to the CPU itself, the numbers must not move."""
    reference = chunk(wan_pipe())
    pipe = wan_pipe(runtime=RuntimeOptions(compile=True))
    offload_denoiser(pipe.transformer, CPU)
    result = chunk(pipe)
    torch.testing.assert_close(result.latents, reference.latents, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.mask, reference.mask, atol=1e-4, rtol=1e-4)
