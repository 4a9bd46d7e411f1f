"""Speed and memory options of a loaded GenProp pipeline (mostly for CUDA), applied through diffusers' own APIs.

* `attention_backend`: diffusers' attention dispatcher (`flash`, `_native_cudnn`, `sage`, ...) for backbones
  whose attention goes through it (Wan). Set before the adapter copies its blocks, so the copies use it too.
  SVD's attention always calls PyTorch SDPA, which already picks flash/mem-efficient kernels on CUDA.
* `compile`: `torch.compile` of the repeated blocks (regional compilation: the DiT's transformer blocks, or
  the U-Net's blocks) and of the adapter's block copies; the GenProp hooks run inside the compiled calls.
* `vae_tiling`: tiled VAE encode/decode (Wan's VAE; SVD's temporal decoder has no tiling and already decodes
  8 frames at a time).
* `offload`: `encoders` keeps the text and image encoders in CPU memory and moves each to the device only
  while it runs (once per clip); `group` also streams the frozen denoiser's blocks from CPU memory one group at
  a time (diffusers group offloading), for GPUs that cannot hold the backbone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from genprop_cli.config import RuntimeOptions
from genprop_cli.errors import OptionError


def set_attention_backend(denoiser: nn.Module, family: str, backend: str | None) -> None:
    """Routes the denoiser's attention through one diffusers backend (before the adapter copies blocks)."""
    if not backend:
        return
    if family != "wan":
        raise OptionError(f"--attention-backend applies to Wan variants; {family} attention always runs PyTorch SDPA")
    try:
        denoiser.set_attention_backend(backend)
    except (ValueError, RuntimeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError(f"--attention-backend {backend}: {first}") from None


def enable_vae_tiling(vae: nn.Module, family: str, enabled: bool) -> None:
    if not enabled:
        return
    if not hasattr(vae, "enable_tiling") or family == "svd":
        raise OptionError("--vae-tiling applies to Wan variants; SVD's VAE decodes 8 frames at a time instead")
    vae.enable_tiling()


def compile_blocks(modules: list[nn.Module]) -> None:
    """Compiles each block in place (regional compilation: one graph per block class, reused)."""
    for module in modules:
        module.compile(fullgraph=False, dynamic=False)


def offload_denoiser(denoiser: nn.Module, device: torch.device) -> None:
    """Keeps the frozen denoiser in CPU memory and streams its blocks to `device` as they run."""
    from diffusers.hooks import apply_group_offloading

    apply_group_offloading(
        denoiser, onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
        num_blocks_per_group=1, use_stream=device.type == "cuda",
    )  # fmt: skip


def apply_runtime(backbone, adapter: nn.Module, device: torch.device, options: RuntimeOptions) -> EncoderOffload:
    """What a pipeline does once its adapter is attached: compile, group-offload the frozen denoiser, and
    return the encoder offloader its encode steps use."""
    if options.compile:
        compile_blocks([*backbone.all_blocks(), *adapter.blocks()])
    if options.offload == "group":
        offload_denoiser(backbone.denoiser, device)
    return EncoderOffload(options.offload != "none", device)


class EncoderOffload:
    """Moves an encoder to the execution device only while it runs, when offloading is on."""

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled, self.device = enabled, device

    @contextmanager
    def use(self, module: nn.Module | None) -> Iterator[None]:
        if module is None or not self.enabled:
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def check_runtime(options: RuntimeOptions, device: torch.device) -> None:
    """Refuses combinations that cannot work before anything is loaded."""
    if options.offload == "group" and device.type == "cpu":
        raise OptionError("--offload group streams weights to an accelerator; it has no use on --device cpu")
