"""How a family's sampler is put together from a diffusers pipeline: the loading steps of `from_pretrained`
(runtime options that act on the frozen parts, device placement, the adapter file) and the adapter set-up of
its constructor (make or move the adapter, compile, attach, freeze, offload), in the order they must run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch
from torch import nn

from genprop_cli.config import RuntimeOptions
from genprop_cli.families import get_family
from genprop_cli.families.base import Backbone, ChunkSampler
from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser
from genprop_cli.pipelines.acceleration import (
    EncoderOffload,
    apply_runtime,
    compile_if_asked,
    enable_vae_tiling,
    set_attention_backend,
)

SamplerT = TypeVar("SamplerT", bound=ChunkSampler)


def load_sampler(
    sampler: type[SamplerT],
    pipeline_class: Any,
    backbone_dir: Path,
    adapter_file: Path | None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    file_variant: str | None,
    sce_blocks: int | None,
    runtime: RuntimeOptions,
    encoders: tuple[str, ...],
    vae_dtype: torch.dtype | None = None,
) -> SamplerT:
    """A sampler's `from_pretrained`: loads the `pipeline_class` folder (safetensors only), sets the attention
    backend (before the adapter copies blocks) and VAE tiling, moves the VAE to `device` (in `vae_dtype` if
    given), the denoiser unless group-offloaded and the `encoders` it has unless offloaded, loads the adapter
    file if any, and returns `sampler(pipeline, adapter, sce_blocks=..., device=..., runtime=...)`."""
    pipeline = pipeline_class.from_pretrained(str(backbone_dir), dtype=dtype, use_safetensors=True, variant=file_variant)
    backbone_class = get_family(sampler.family).backbone()
    denoiser = getattr(pipeline, backbone_class.component)
    set_attention_backend(denoiser, sampler.capabilities, runtime.attention_backend)
    enable_vae_tiling(pipeline.vae, sampler.capabilities, runtime.vae_tiling)
    pipeline.vae.to(device=device, dtype=vae_dtype)
    if runtime.offload != "group":
        denoiser.to(device)
    if runtime.offload == "none":
        for name in encoders:
            encoder = getattr(pipeline, name, None)
            if encoder is not None:
                encoder.to(device)
    adapter = None
    if adapter_file is not None:
        adapter = GenPropAdapter.load(adapter_file, backbone_class(denoiser))
    return sampler(pipeline, adapter, sce_blocks=sce_blocks, device=device, runtime=runtime)


class AttachedAdapter(NamedTuple):
    adapter: GenPropAdapter  # what GenProp trains
    denoiser: GenPropDenoiser  # the backbone with the adapter attached
    offload: EncoderOffload  # what the sampler's encode steps run their encoders under


def attach_adapter(
    backbone: Backbone,
    adapter: GenPropAdapter | None,
    *,
    sce_blocks: int | None,
    device: torch.device,
    dtype: torch.dtype,
    runtime: RuntimeOptions,
    frozen: Iterable[nn.Module | None],
) -> AttachedAdapter:
    """A sampler's adapter set-up: without an adapter, a zero-initialised one copying `sce_blocks` blocks
    (default: the backbone's choice); moved to `device` and `dtype`, compiled if asked, attached to the
    backbone; the `frozen` modules (None skipped) lose their gradients, they and the adapter go to eval
    mode, and the runtime's offloading is applied."""
    if adapter is None:
        blocks = sce_blocks or backbone.default_sce_blocks
        adapter = GenPropAdapter(backbone, AdapterConfig(family=backbone.family, sce_blocks=blocks))
    adapter = adapter.to(device, dtype)
    compile_if_asked(backbone, adapter, runtime)  # before attaching: the hooks stay outside compiled code
    denoiser = GenPropDenoiser(backbone, adapter)
    for module in frozen:
        if module is not None:
            module.requires_grad_(False).eval()
    adapter.eval()
    return AttachedAdapter(adapter, denoiser, apply_runtime(backbone, adapter, device, runtime))
