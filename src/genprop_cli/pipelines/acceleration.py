"""Speed and memory options of a loaded GenProp pipeline (mostly for CUDA), applied through diffusers' own APIs.

Which options a sampler accepts is what its family's `Capabilities` say, never its family's name.

* `attention_backend`: diffusers' attention dispatcher (`flash`, `_native_cudnn`, `sage`, ...) for backbones
  whose attention goes through it (`Capabilities.attention_backends`: Wan). Set before the adapter copies its
  blocks, so the copies use it too. SVD's attention always calls PyTorch SDPA, which already picks
  flash/mem-efficient kernels on CUDA.
* `compile`: `torch.compile` of the repeated blocks (regional compilation: the DiT's transformer blocks, or
  the U-Net's blocks) and of the adapter's block copies. Each block's own forward is compiled, once per block
  class, and the GenProp hooks run around it, outside the compiled code: compiling the hooked forward made
  one graph per hooked block (each hook's block index and arguments are specialised), which at real size
  (8 hooked Wan blocks, 9 U-Net ones) ran into dynamo's recompile limit and left the rest uncompiled.
* `vae_tiling`: tiled VAE encode/decode (`Capabilities.vae_tiling`: Wan's VAE; SVD's temporal decoder has no
  tiling and already decodes 8 frames at a time).
* `offload`: `encoders` keeps the text and image encoders in CPU memory and moves each to the device only
  while it runs (once per clip); `group` also streams the frozen denoiser's blocks from CPU memory one group at
  a time (diffusers group offloading), for GPUs that cannot hold the backbone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from diffusers.hooks import HookRegistry, ModelHook

from genprop_cli.config import RuntimeOptions
from genprop_cli.errors import OptionError
from genprop_cli.families import Capabilities, families_with

_COMPILE_HOOK = "genprop-compile"


def set_attention_backend(denoiser: nn.Module, capabilities: Capabilities, backend: str | None) -> None:
    """Routes the denoiser's attention through one diffusers backend (before the adapter copies blocks)."""
    if not backend:
        return
    if not capabilities.attention_backends:
        raise OptionError(
            "--attention-backend applies to backbones whose attention goes through diffusers' dispatcher "
            f"({', '.join(families_with('attention_backends'))})"
        )
    try:
        denoiser.set_attention_backend(backend)
    except (ValueError, RuntimeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError(f"--attention-backend {backend}: {first}") from None


def enable_vae_tiling(vae: nn.Module, capabilities: Capabilities, enabled: bool) -> None:
    """Switches on the VAE's tiled encode/decode."""
    if not enabled:
        return
    if not capabilities.vae_tiling or not hasattr(vae, "enable_tiling"):
        raise OptionError(f"--vae-tiling applies to backbones with a tiled VAE ({', '.join(families_with('vae_tiling'))})")
    vae.enable_tiling()


@functools.cache
def _compiled_forward(block_class: type[nn.Module]) -> Callable[..., Any]:
    """One compiled `forward` per block class, shared by every block of it (regional compilation)."""
    return torch.compile(block_class.forward, fullgraph=False, dynamic=False)


class _CompiledForward(ModelHook):
    """Runs the module's own forward through its class's compiled forward."""

    def __init__(self, block_class: type[nn.Module]) -> None:
        super().__init__()
        self._forward = _compiled_forward(block_class)

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self._forward(module, *args, **kwargs)


def compile_blocks(modules: list[nn.Module]) -> None:
    """Compiles each block's own forward in place; must run before the GenProp hooks are attached, so
    that they stay outside the compiled code."""
    for module in modules:
        registry = HookRegistry.check_if_exists_or_initialize(module)
        if registry.hooks:
            # A compiled forward registered after other hooks would replace them, not run inside them.
            raise RuntimeError(f"compile_blocks: {type(module).__name__} already has hooks ({', '.join(registry.hooks)})")
        registry.register_hook(_CompiledForward(type(module)), _COMPILE_HOOK)


def compile_if_asked(backbone, adapter: nn.Module, options: RuntimeOptions) -> None:
    """`--compile`: compiles the backbone's and the adapter's blocks (before the adapter is attached)."""
    if options.compile:
        compile_blocks([*backbone.all_blocks(), *adapter.blocks()])


def offload_denoiser(denoiser: nn.Module, device: torch.device) -> None:
    """Keeps the frozen denoiser in CPU memory and streams its blocks to `device` as they run."""
    from diffusers.hooks import apply_group_offloading

    apply_group_offloading(
        denoiser, onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
        num_blocks_per_group=1, use_stream=device.type == "cuda",
    )  # fmt: skip


def apply_runtime(backbone, adapter: nn.Module, device: torch.device, options: RuntimeOptions) -> EncoderOffload:
    """What a pipeline does once its adapter is attached: group-offload the frozen denoiser, and return the
    encoder offloader its encode steps use."""
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
