"""GenProp on Stable Video Diffusion's `UNetSpatioTemporalConditionModel`.

Wiring (all through diffusers hooks, see `families/base.py`; what the hooks record is an `SVDCapture`):
- the task embedding is added to the output of `unet.add_embedding`, i.e. to the time/conditioning embedding;
- the SCE input is the backbone's `conv_in` output (the backbone -> SCE feed) plus a projection of the
  original video's latents; it runs the copied down blocks (and mid block, when N covers it) just before
  the backbone's mid block, where every input it needs has been computed;
- like ControlNet on U-Nets, each SCE output is added through a zero-initialised 1x1 conv to the backbone
  skip connection of the same position (and to the mid block's output): only the skips change, not the
  sample flowing down the backbone;
- the MPD copies the last up block, reads exactly the inputs that block receives (after injection) and
  predicts one mask logit per latent pixel and frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers.hooks import ModelHook
from torch import nn

from genprop_cli.families.base import Backbone, CallSlot, ForwardCall, last_samples

if TYPE_CHECKING:
    from diffusers import UNetSpatioTemporalConditionModel

    from genprop_cli.models.genprop import GenPropAdapter


@dataclass
class SVDCapture:
    """What the SVD hooks record during one denoiser call, for the SCE and the MPD to run blocks on their own."""

    conv_in: torch.Tensor | None = None  # (B*F, C, h, w): the conv_in output, as the first down block gets it
    temb: torch.Tensor | None = None  # (B*F, D): the time/conditioning embedding, task vector included
    image_only_indicator: torch.Tensor | None = None  # (B, F)
    encoder_hidden_states: torch.Tensor | None = None  # (B*F, 1, D): the cross-attention context
    last_up_kwargs: dict[str, Any] | None = None  # the last up block's keyword inputs, after injection


class SVDBackbone(Backbone[SVDCapture]):
    family = "svd"
    component = "unet"
    inject_input = True  # the conv_in output is a skip connection, as in ControlNet
    first_frame_change = True  # `GenPropSVDPipeline.first_frame_change`

    def __init__(self, unet: UNetSpatioTemporalConditionModel) -> None:
        super().__init__(unet)
        self.unet = unet

    # --- structure -----------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.unet.down_blocks) + 1 + len(self.unet.up_blocks)

    def encoder_blocks(self) -> list[nn.Module]:
        return [*self.unet.down_blocks, self.unet.mid_block]

    def all_blocks(self) -> list[nn.Module]:
        return [*self.unet.down_blocks, self.unet.mid_block, *self.unet.up_blocks]

    def decoder_block(self) -> nn.Module:
        return self.unet.up_blocks[-1]

    @property
    def embedding_dim(self) -> int:
        return self.unet.time_embedding.linear_2.out_features

    def _skips_of(self, block: nn.Module) -> int:
        return len(block.resnets) + (1 if getattr(block, "downsamplers", None) else 0)

    def _num_skip_taps(self, num_sce_blocks: int) -> int:
        copied_down = self.unet.down_blocks[: min(num_sce_blocks, len(self.unet.down_blocks))]
        return 1 + sum(self._skips_of(b) for b in copied_down)

    def _includes_mid(self, num_sce_blocks: int) -> bool:
        return num_sce_blocks > len(self.unet.down_blocks)

    def tap_channels(self, num_sce_blocks: int) -> list[int]:
        widths = self.unet.config.block_out_channels
        channels = [widths[0]]  # conv_in output
        for i, block in enumerate(self.unet.down_blocks[:num_sce_blocks]):
            channels += [widths[i]] * self._skips_of(block)
        if self._includes_mid(num_sce_blocks):
            channels.append(widths[-1])
        return channels

    def make_source_projection(self) -> nn.Module:
        conv_in = self.unet.conv_in
        latent_channels = self.unet.config.out_channels
        projection = nn.Conv2d(latent_channels, conv_in.out_channels, conv_in.kernel_size, padding=conv_in.padding)
        # Start from the backbone's own reading of (noisy) latents so the SCE sees meaningful features
        # from step one; the conv_in bias is already in the backbone features it is added to.
        with torch.no_grad():
            projection.weight.copy_(conv_in.weight[:, :latent_channels])
            projection.bias.zero_()
        return projection.to(dtype=conv_in.weight.dtype)

    def make_injection(self, channels: int) -> nn.Module:
        return nn.Conv2d(channels, channels, kernel_size=1)

    def make_change_projection(self) -> nn.Module:
        conv_in = self.unet.conv_in
        inputs = 2 * self.unet.config.out_channels  # the change and its magnitude
        projection = nn.Conv2d(inputs, conv_in.out_channels, conv_in.kernel_size, padding=conv_in.padding)
        return projection.to(conv_in.weight.dtype)

    def make_mask_change_projection(self) -> nn.Module:
        channels = self.unet.config.block_out_channels[0]
        return nn.Conv2d(2 * self.unet.config.out_channels, channels, kernel_size=3, padding=1).to(self.unet.dtype)

    def mask_change_input(self, call: ForwardCall[SVDCapture]) -> torch.Tensor:
        change = call.first_frame_change
        if call.mask_samples is not None:
            change = last_samples(change, change.shape[0], call.mask_samples)
        return change.flatten(0, 1)  # (B, F, C, h, w) -> (B*F, C, h, w), as the last up block's output

    def make_mask_head(self) -> nn.Module:
        channels = self.unet.config.block_out_channels[0]
        groups = 32 if channels % 32 == 0 else 1
        return nn.Sequential(
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.SiLU(),
            nn.Conv2d(channels, 1, kernel_size=1),
        )

    # --- running blocks on their own ---------------------------------------------------------------
    def new_capture(self) -> SVDCapture:
        return SVDCapture()

    def run_encoder_block(
        self, block: nn.Module, hidden: torch.Tensor, call: ForwardCall[SVDCapture]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        c = call.capture
        kwargs: dict[str, Any] = {"temb": c.temb, "image_only_indicator": c.image_only_indicator}
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = c.encoder_hidden_states
        out = block(hidden_states=hidden, **kwargs)
        if isinstance(out, tuple):  # down blocks: (hidden, skip outputs)
            hidden, skips = out
            return hidden, list(skips)
        return out, [out]  # mid block

    def run_decoder_block(self, block: nn.Module, call: ForwardCall[SVDCapture]) -> torch.Tensor:
        kwargs = call.capture.last_up_kwargs
        if call.mask_samples is not None:  # frames are folded into the batch: (B*F, ...) rows, (B, F) indicator
            batch, frames = call.source_latents.shape[:2]
            kwargs = {k: last_samples(v, batch, call.mask_samples, frames) for k, v in kwargs.items()}
        return block(**kwargs)

    def mask_logits_to_frames(self, logits: torch.Tensor, call: ForwardCall[SVDCapture]) -> torch.Tensor:
        frames = call.source_latents.shape[1]
        return logits.reshape(-1, frames, *logits.shape[1:])

    # --- attaching ---------------------------------------------------------------------------------
    def up_block_skip_indices(self) -> list[list[int]]:
        """For each up block, the indices (into the down-path skip list) of the skips it receives."""
        total = 1 + sum(self._skips_of(b) for b in self.unet.down_blocks)
        indices, end = [], total
        for up in self.unet.up_blocks:
            start = end - len(up.resnets)
            indices.append(list(range(start, end)))
            end = start
        return indices

    def hook_points(self, adapter: GenPropAdapter, slot: CallSlot) -> list[tuple[nn.Module, Any]]:
        n = adapter.config.sce_blocks
        num_skip_taps = self._num_skip_taps(n)
        points: list[tuple[nn.Module, Any]] = [
            (self.unet.add_embedding, _AddTaskEmbedding(adapter, slot)),
            (self.unet.down_blocks[0], _CaptureSCEInputs(slot)),
            (self.unet.mid_block, _RunSCE(self, adapter, slot, num_skip_taps, self._includes_mid(n))),
        ]
        last = len(self.unet.up_blocks) - 1
        for u, (up, idx) in enumerate(zip(self.unet.up_blocks, self.up_block_skip_indices())):
            if u == last or any(i < num_skip_taps for i in idx):
                points.append((up, _InjectSkips(self, adapter, slot, idx, num_skip_taps, run_mpd=u == last)))
        return points


class _AddTaskEmbedding(ModelHook):
    def __init__(self, adapter: GenPropAdapter, slot: CallSlot) -> None:
        super().__init__()
        self.adapter, self.slot = adapter, slot

    def post_forward(self, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
        call = self.slot.call
        if call is None:
            return output
        return output + self.adapter.task_embedding(call.task_ids).to(output.dtype)


class _CaptureSCEInputs(ModelHook):
    """Records the conv_in output, the embedding and the frame indicator as the first down block gets them."""

    def __init__(self, slot: CallSlot) -> None:
        super().__init__()
        self.slot = slot

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.slot.call is not None:
            c: SVDCapture = self.slot.call.capture
            c.conv_in = kwargs["hidden_states"]
            c.temb = kwargs["temb"]
            c.image_only_indicator = kwargs["image_only_indicator"]
        return args, kwargs


class _RunSCE(ModelHook):
    """Runs the SCE before the backbone's mid block (its inputs are all known there) and injects the mid residual."""

    def __init__(
        self, backbone: SVDBackbone, adapter: GenPropAdapter, slot: CallSlot, num_skip_taps: int, has_mid: bool
    ) -> None:
        super().__init__()
        self.backbone, self.adapter, self.slot = backbone, adapter, slot
        self.num_skip_taps, self.has_mid = num_skip_taps, has_mid

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        call = self.slot.call
        if call is not None:
            call.capture.encoder_hidden_states = kwargs["encoder_hidden_states"]
            flat = call.source_latents.flatten(0, 1)  # (B, F, C, h, w) -> (B*F, C, h, w)
            probe = call.probe.flatten(0, 1) if call.probe is not None else None
            change = call.first_frame_change
            change = change.flatten(0, 1) if change is not None else None
            residuals = self.adapter.run_sce(flat, call.capture.conv_in, self.backbone, call, probe, change)
            call.residuals = [r * call.sce_scale for r in residuals]
        return args, kwargs

    def post_forward(self, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
        call = self.slot.call
        if call is None or not self.has_mid:
            return output
        return output + call.residuals[self.num_skip_taps]


class _InjectSkips(ModelHook):
    """Adds SCE residuals to the skip connections an up block receives; on the last block, runs the MPD."""

    def __init__(
        self,
        backbone: SVDBackbone,
        adapter: GenPropAdapter,
        slot: CallSlot,
        skip_indices: list[int],
        num_skip_taps: int,
        run_mpd: bool,
    ) -> None:
        super().__init__()
        self.backbone, self.adapter, self.slot = backbone, adapter, slot
        self.skip_indices, self.num_skip_taps, self.run_mpd = skip_indices, num_skip_taps, run_mpd

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        call = self.slot.call
        if call is None:
            return args, kwargs
        skips = kwargs["res_hidden_states_tuple"]
        kwargs["res_hidden_states_tuple"] = tuple(
            s + call.residuals[i] if i < self.num_skip_taps else s for s, i in zip(skips, self.skip_indices)
        )
        if self.run_mpd and call.predict_mask:
            call.capture.last_up_kwargs = kwargs
            call.mask_logits = self.adapter.mpd(self.backbone, call)
        return args, kwargs
