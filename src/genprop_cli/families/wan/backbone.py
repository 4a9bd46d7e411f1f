"""GenProp on Wan 2.x's `WanTransformer3DModel` (a video DiT: patch tokens through M identical blocks).

Wiring (all through diffusers hooks, see `families/base.py`; the same generic SCE/MPD code as for SVD; what
the hooks record is a `WanCapture`):
- the task embedding is added to `timestep_proj`, the adaLN modulation every block reads, through a
  post-forward hook on `transformer.condition_embedder`;
- the SCE runs in a pre-forward hook on `blocks[0]`, where the backbone's patch tokens (the backbone ->
  SCE feed), the text/image context, the modulation and the RoPE tables all exist. Its input is those
  tokens plus the ORIGINAL video's latents patch-embedded by a copy of the backbone's patch embedding;
  it runs copies of the first N blocks (VACE's layout, but dense and starting from the I2V model);
- each SCE block's output goes through its own zero-initialised `Linear(D, D)` and is added to the output
  of the backbone block at the same depth (post-forward hooks on `blocks[k]`, k < N);
- the MPD copies the last block, reads exactly the inputs the backbone's last block receives, and a
  per-token head predicts one logit per latent pixel of the token's patch.

Latent layout is the transformer's own: (B, C, F_latent, h, w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from diffusers.hooks import ModelHook
from torch import nn

from genprop_cli.families.base import Backbone, CallSlot, ForwardCall, last_samples

if TYPE_CHECKING:
    from diffusers import WanTransformer3DModel

    from genprop_cli.models.genprop import GenPropAdapter


class WanBlockInputs(NamedTuple):
    """A Wan transformer block's four inputs, in the order of its forward."""

    hidden_states: torch.Tensor  # (B, S, D) patch tokens
    encoder_hidden_states: torch.Tensor  # (B, L, D) text (and image) context
    temb: torch.Tensor  # (B, 6, D) or, with per-token timesteps, (B, S, 6, D): the adaLN modulation
    rotary_emb: Any  # the RoPE tables, shared by the batch


@dataclass
class WanCapture:
    """What the Wan hooks record during one denoiser call, for the SCE and the MPD to run blocks on their own."""

    block_inputs: WanBlockInputs | None = None  # as `blocks[0]` receives them
    last_block_inputs: WanBlockInputs | None = None  # as the last block receives them (after injection)


class WanBackbone(Backbone[WanCapture]):
    family = "wan"
    component = "transformer"

    def __init__(self, transformer: WanTransformer3DModel) -> None:
        super().__init__(transformer)
        self.transformer = transformer

    # --- structure -----------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.transformer.blocks)

    @property
    def default_sce_blocks(self) -> int:
        # A quarter of the blocks: 8 of Wan2.2-TI2V-5B's 30 (1.39 B trainable parameters with their
        # injections), 10 of Wan2.1-14B's 40; the SCE's cost is N/M of the backbone's.
        return max(1, round(self.num_blocks / 4))

    def encoder_blocks(self) -> list[nn.Module]:
        return list(self.transformer.blocks)

    def all_blocks(self) -> list[nn.Module]:
        return list(self.transformer.blocks)

    def decoder_block(self) -> nn.Module:
        return self.transformer.blocks[-1]

    @property
    def inner_dim(self) -> int:
        return self.transformer.patch_embedding.out_channels

    @property
    def embedding_dim(self) -> int:
        return self.transformer.condition_embedder.time_proj.out_features  # 6 * D: the adaLN modulation

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.out_channels

    def tap_channels(self, num_sce_blocks: int) -> list[int]:
        return [self.inner_dim] * num_sce_blocks

    def make_source_projection(self) -> nn.Module:
        return _SourcePatchEmbedding(self.transformer.patch_embedding, self.latent_channels)

    def make_injection(self, channels: int) -> nn.Module:
        return nn.Linear(channels, channels)

    def make_mask_head(self) -> nn.Module:
        d = self.inner_dim
        return nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, math.prod(self.transformer.config.patch_size))
        )

    # --- running blocks on their own ---------------------------------------------------------------
    def new_capture(self) -> WanCapture:
        return WanCapture()

    def run_encoder_block(
        self, block: nn.Module, hidden: torch.Tensor, call: ForwardCall[WanCapture]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs = call.capture.block_inputs
        out = block(hidden, inputs.encoder_hidden_states, inputs.temb, inputs.rotary_emb)
        return out, [out]

    def run_decoder_block(self, block: nn.Module, call: ForwardCall[WanCapture]) -> torch.Tensor:
        inputs = tuple(call.capture.last_block_inputs)
        if call.mask_samples is not None:  # the RoPE tables (batch 1) are shared and stay as they are
            inputs = last_samples(inputs, call.source_latents.shape[0], call.mask_samples)
        return block(*inputs)

    def mask_logits_to_frames(self, logits: torch.Tensor, call: ForwardCall[WanCapture]) -> torch.Tensor:
        """(B, S, pt*ph*pw) token logits -> (B, F_latent, 1, h, w), undoing the patchification."""
        _, _, frames, height, width = call.source_latents.shape
        batch = logits.shape[0]
        pt, ph, pw = self.transformer.config.patch_size
        grid = logits.reshape(batch, frames // pt, height // ph, width // pw, pt, ph, pw)
        grid = grid.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, frames, height, width)
        return grid[:, :, None]

    # --- attaching ---------------------------------------------------------------------------------
    def hook_points(self, adapter: GenPropAdapter, slot: CallSlot) -> list[tuple[nn.Module, Any]]:
        blocks = self.transformer.blocks
        n = adapter.config.sce_blocks
        points: list[tuple[nn.Module, Any]] = [
            (self.transformer.condition_embedder, _AddTaskEmbedding(adapter, slot)),
            (blocks[0], _RunSCE(self, adapter, slot)),
        ]
        points += [(blocks[k], _AddResidual(slot, k)) for k in range(n)]
        points.append((blocks[-1], _RunMPD(self, adapter, slot)))
        return points


class _SourcePatchEmbedding(nn.Module):
    """Patch-embeds the original video's latents into tokens; starts as the backbone's own reading of
    latents (its patch embedding restricted to the latent channels)."""

    def __init__(self, patch_embedding: nn.Conv3d, latent_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            latent_channels, patch_embedding.out_channels, patch_embedding.kernel_size, stride=patch_embedding.stride
        )
        with torch.no_grad():
            self.conv.weight.copy_(patch_embedding.weight[:, :latent_channels])
            self.conv.bias.zero_()  # the backbone's bias is already in the tokens this is added to
        self.to(dtype=patch_embedding.weight.dtype)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.conv(latents.to(self.conv.weight.dtype)).flatten(2).transpose(1, 2)


class _AddTaskEmbedding(ModelHook):
    """Adds the task vector to `timestep_proj` (B, 6D) or, with per-token timesteps, (B, S, 6D)."""

    def __init__(self, adapter: GenPropAdapter, slot: CallSlot) -> None:
        super().__init__()
        self.adapter, self.slot = adapter, slot

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        call = self.slot.call
        if call is None:
            return output
        temb, timestep_proj, *rest = output
        task = self.adapter.task_embedding(call.task_ids).to(timestep_proj.dtype)
        if timestep_proj.ndim == 3:
            task = task[:, None]
        return (temb, timestep_proj + task, *rest)


class _RunSCE(ModelHook):
    """Captures the first block's inputs and runs the SCE on them (every input it needs exists here)."""

    def __init__(self, backbone: WanBackbone, adapter: GenPropAdapter, slot: CallSlot) -> None:
        super().__init__()
        self.backbone, self.adapter, self.slot = backbone, adapter, slot

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        call = self.slot.call
        if call is not None:
            inputs = _block_inputs(args, kwargs)
            call.capture.block_inputs = inputs
            residuals = self.adapter.run_sce(call.source_latents, inputs.hidden_states, self.backbone, call, call.probe)
            call.residuals = [r * call.sce_scale for r in residuals]
        return args, kwargs


class _AddResidual(ModelHook):
    def __init__(self, slot: CallSlot, index: int) -> None:
        super().__init__()
        self.slot, self.index = slot, index

    def post_forward(self, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
        call = self.slot.call
        if call is None:
            return output
        return output + call.residuals[self.index].to(output.dtype)


class _RunMPD(ModelHook):
    def __init__(self, backbone: WanBackbone, adapter: GenPropAdapter, slot: CallSlot) -> None:
        super().__init__()
        self.backbone, self.adapter, self.slot = backbone, adapter, slot

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        call = self.slot.call
        if call is not None and call.predict_mask:
            call.capture.last_block_inputs = _block_inputs(args, kwargs)
            call.mask_logits = self.adapter.mpd(self.backbone, call)
        return args, kwargs


def _block_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> WanBlockInputs:
    """A Wan block's four inputs, however the caller passed them (positionally in diffusers' loop)."""
    values = list(args) + [kwargs[name] for name in WanBlockInputs._fields[len(args) :]]
    return WanBlockInputs(*values[:4])
