"""What a backbone family implements: the contracts between GenProp's generic code and one family.

* `Backbone`: what the generic modules (SCE, MPD, task embedding; `models/genprop.py`) need from one denoiser
  family: its blocks, how to call one of them on its own, where a residual goes, and the hook points. It
  attaches GenProp through diffusers' `HookRegistry` (named, removable hooks), so no forward code of the
  backbone is copied or patched. What its hooks record during one call is a typed, per-family capture
  (`Backbone.new_capture()`), carried by the call's `ForwardCall`.
* `ChunkSampler`: what `api.GenProp.propagate` (and training) asks of a family's sampler, chunk by chunk,
  with `ChunkResult`, what one chunk gives back; the sampler declares its `Capabilities`.

The registry (`genprop_cli.families`) names each family's implementations; see docs/architecture.md.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from genprop_cli.config import RuntimeOptions, Task
from genprop_cli.families import Capabilities

if TYPE_CHECKING:
    from genprop_cli.models.genprop import GenPropAdapter, GenPropDenoiser

HOOK_PREFIX = "genprop"

#: A family's capture record (e.g. `SVDCapture`): what its hooks record during one denoiser call, for the
#: SCE and the MPD to run blocks on their own.
CaptureT = TypeVar("CaptureT")


@dataclass
class ForwardCall(Generic[CaptureT]):
    """What one GenProp denoiser call carries from its arguments to the hooks, and back out."""

    source_latents: torch.Tensor  # backbone-specific layout of the ORIGINAL video's latents
    task_ids: torch.Tensor  # (B,) long
    capture: CaptureT  # the family's record of block inputs, filled by its hooks (`Backbone.new_capture()`)
    sce_scale: float = 1.0
    # Training only: a small perturbation of `source_latents` (same shape, zero outside the modified
    # region); the SCE also runs on the perturbed input and `sce_response` measures how much it reacts.
    probe: torch.Tensor | None = None
    # False skips the MPD (its copied block is among the backbone's most expensive): sampling needs the
    # mask only from its last step, or at every step with --preserve.
    predict_mask: bool = True
    # Run the MPD on the batch's last `mask_samples` samples only (None: all). Under CFG only the conditional
    # branch's mask is read, and it comes last: the MPD's block then runs at half the batch.
    mask_samples: int | None = None
    # For an adapter with `first_frame_change`: edited minus original first-frame latent, broadcast to every
    # frame in `source_latents`' layout.
    first_frame_change: torch.Tensor | None = None
    residuals: list[torch.Tensor] | None = None
    mask_logits: torch.Tensor | None = None
    sce_response: torch.Tensor | None = None


class CallSlot:
    """Holds the active `ForwardCall`; hooks pass through untouched when no GenProp call is active."""

    def __init__(self) -> None:
        self.call: ForwardCall | None = None


class Backbone(ABC, Generic[CaptureT]):
    """Adapter from GenProp's generic modules to one diffusers denoiser family."""

    family: ClassVar[str]
    #: the diffusers pipeline component that is this family's denoiser ("unet", "transformer")
    component: ClassVar[str]
    #: whether the SCE input itself (before its first block) is injected, as ControlNet does for U-Nets
    inject_input: ClassVar[bool] = False
    #: whether the family's sampler and objective give the SCE the first frame's change
    #: (`AdapterConfig.first_frame_change`); adapters that read it are refused on a family without
    first_frame_change: ClassVar[bool] = False

    def __init__(self, denoiser: nn.Module) -> None:
        self.denoiser = denoiser
        self._hooked: list[tuple[nn.Module, str]] = []

    # --- structure -----------------------------------------------------------------------------------
    @property
    @abstractmethod
    def num_blocks(self) -> int:
        """M: the number of blocks of the denoiser, the denominator of the SCE's cost estimate."""

    @property
    def default_sce_blocks(self) -> int:
        """N when the user does not choose: every block the SCE may copy (ControlNet-sized for U-Nets)."""
        return len(self.encoder_blocks())

    @abstractmethod
    def encoder_blocks(self) -> list[nn.Module]:
        """The blocks the SCE may copy, in execution order (the SCE copies the first N)."""

    @abstractmethod
    def all_blocks(self) -> list[nn.Module]:
        """Every top-level block of the denoiser, in execution order (what regional compilation compiles)."""

    @abstractmethod
    def decoder_block(self) -> nn.Module:
        """The last block; the MPD copies it."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Width of the conditioning embedding the task embedding is added to."""

    @abstractmethod
    def tap_channels(self, num_sce_blocks: int) -> list[int]:
        """Channels of each SCE output that gets its own zero-initialised injection layer."""

    @abstractmethod
    def make_source_projection(self) -> nn.Module:
        """Maps the original video's latents into the SCE's input feature space."""

    @abstractmethod
    def make_injection(self, channels: int) -> nn.Module:
        """One injection layer (the generic code zero-initialises it)."""

    @abstractmethod
    def make_mask_head(self) -> nn.Module:
        """Per-position MLP from the MPD block's features to one mask logit."""

    def make_change_projection(self) -> nn.Module:
        """Maps the first frame's change and its magnitude (`models.genprop.change_features`: twice the latent
        channels) into the SCE's input feature space (families with `first_frame_change`)."""
        raise NotImplementedError("families with first_frame_change = True implement this")

    def make_mask_change_projection(self) -> nn.Module:
        """The same into the MPD block's feature space."""
        raise NotImplementedError("families with first_frame_change = True implement this")

    def mask_change_input(self, call: ForwardCall[CaptureT]) -> torch.Tensor:
        """`call.first_frame_change` in the layout of the MPD block's output (its samples only)."""
        raise NotImplementedError("families with first_frame_change = True implement this")

    # --- running blocks on their own ---------------------------------------------------------------
    @abstractmethod
    def new_capture(self) -> CaptureT:
        """An empty record of what this family's hooks capture during one denoiser call."""

    @abstractmethod
    def run_encoder_block(
        self, block: nn.Module, hidden: torch.Tensor, call: ForwardCall[CaptureT]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs one SCE block; returns the hidden state for the next block and the tensors to inject."""

    @abstractmethod
    def run_decoder_block(self, block: nn.Module, call: ForwardCall[CaptureT]) -> torch.Tensor:
        """Runs the MPD's block copy on the inputs the backbone's last block received."""

    @abstractmethod
    def mask_logits_to_frames(self, logits: torch.Tensor, call: ForwardCall[CaptureT]) -> torch.Tensor:
        """Reshapes the head's output to (B, F, 1, h, w) at latent resolution."""

    # --- attaching ---------------------------------------------------------------------------------
    @abstractmethod
    def hook_points(self, adapter: GenPropAdapter, slot: CallSlot) -> list[tuple[nn.Module, Any]]:
        """(module, ModelHook) pairs that wire the adapter into the denoiser."""

    def copy_encoder_blocks(self, n: int) -> nn.ModuleList:
        """Trainable copies of the first `n` blocks (must run before hooks are attached)."""
        blocks = self.encoder_blocks()
        if not 1 <= n <= len(blocks):
            raise ValueError(f"the SCE can copy 1..{len(blocks)} blocks of a {self.family} backbone, got {n}")
        return nn.ModuleList(copy.deepcopy(b) for b in blocks[:n])

    def copy_decoder_block(self) -> nn.Module:
        return copy.deepcopy(self.decoder_block())

    def attach(self, adapter: GenPropAdapter, slot: CallSlot) -> None:
        """Registers the GenProp hooks on the denoiser's modules."""
        from diffusers.hooks import HookRegistry

        if self._hooked:
            raise RuntimeError("GenProp is already attached to this backbone")
        for i, (module, hook) in enumerate(self.hook_points(adapter, slot)):
            name = f"{HOOK_PREFIX}.{i}.{type(hook).__name__}"
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
            self._hooked.append((module, name))

    def detach(self) -> None:
        """Removes every GenProp hook; the denoiser is the bare backbone again."""
        for module, name in self._hooked:
            module._diffusers_hook.remove_hook(name, recurse=False)
        self._hooked.clear()


def last_samples(value: Any, batch: int, keep: int, rows_per_sample: int = 1) -> Any:
    """The last `keep` of `batch` samples of a block input: tensors whose first dimension is per sample
    (`batch` rows, or `batch * rows_per_sample` when frames are folded into it) are cut, tuples recursed
    into, anything else (shared tensors such as RoPE tables, None) kept as it is."""
    if isinstance(value, tuple):
        return tuple(last_samples(v, batch, keep, rows_per_sample) for v in value)
    if not isinstance(value, torch.Tensor) or value.ndim == 0 or keep >= batch:
        return value
    if value.shape[0] == batch * rows_per_sample:
        return value[-keep * rows_per_sample :]
    if value.shape[0] == batch:
        return value[-keep:]
    return value


# --- the sampler side -------------------------------------------------------------------------------------
@dataclass
class ChunkResult:
    """What every family's sampler returns for one chunk."""

    latents: torch.Tensor  # the family's latent layout (SVD: (F, C, h, w); Wan: (C, F_lat, h, w))
    mask: torch.Tensor  # (F, 1, h, w) in [0, 1], the MPD's modification mask, one per output frame


StepCallback = Callable[[int, int], None]  # (steps done, steps in all) of the chunk being sampled


@runtime_checkable
class ChunkSampler(Protocol):
    """The chunk contract: what `api.GenProp.propagate` asks of a family's sampler, one chunk at a time.

    A sampler holds the frozen backbone components and the GenProp adapter. The API plans chunks, calls
    `prepare_anchor` once per clip, `first_condition` for the first chunk and `next_condition` (on the previous
    chunk's result) for the others, `encode_frames` on each chunk's original frames, `sample_chunk`, then
    `decode_latents`; it has no family-specific branch. Conditions and anchors are opaque to it: each family
    chooses what they hold. Training reads `adapter`, `denoiser` and `backbone` and encodes through the
    family's objective.
    """

    family: ClassVar[str]  # the registry name of the family (and of the adapter files it loads)
    capabilities: ClassVar[Capabilities]  # what it can do beyond this contract (--preserve, --vae-tiling, ...)
    adapter: GenPropAdapter  # the trainable SCE + MPD + task embedding
    denoiser: GenPropDenoiser  # the frozen backbone denoiser with the adapter attached
    backbone: Backbone  # the family's `Backbone` around the denoiser

    @classmethod
    def from_pretrained(
        cls,
        backbone_dir: Path,
        adapter_file: Path | None,
        *,
        device: torch.device,
        dtype: torch.dtype,
        file_variant: str | None = None,
        sce_blocks: int | None = None,
        runtime: RuntimeOptions = ...,
    ) -> ChunkSampler:
        """Loads a diffusers pipeline folder (safetensors only) and the adapter file; without one, a
        zero-initialised adapter copying `sce_blocks` blocks (default: the family's choice)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the computation runs (weights may live in CPU memory with offloading)."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """The denoiser's dtype; latents come back in it."""
        ...

    @property
    def size_multiple(self) -> int:
        """Working width and height must be multiples of this."""
        ...

    def prepare_anchor(self, edited: torch.Tensor, prompt: str = "") -> Any:
        """What conditions every chunk of a clip, from the user's edited frame (3, H, W) in [-1, 1] and the
        prompt (an `OptionError` for a non-empty prompt when `capabilities.text` is False)."""
        ...

    def first_condition(self, edited: torch.Tensor, generator: torch.Generator | None) -> Any:
        """The first chunk's first-frame conditioning, from the user's edited frame."""
        ...

    def next_condition(self, result: ChunkResult, decoded: torch.Tensor, offset: int) -> Any:
        """A later chunk's first-frame conditioning: what the previous chunk generated at frame `offset` of
        its own (`result`, and `decoded`, its frames as `decode_latents` gave them)."""
        ...

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """A chunk's original frames (F, 3, H, W) in [-1, 1] -> the latents the SCE reads (family layout)."""
        ...

    def sample_chunk(
        self,
        *,
        source_latents: torch.Tensor,
        condition: Any,
        anchor: Any,
        task: Task,
        steps: int,
        guidance: float,
        generator: torch.Generator | None = None,
        sce_scale: float = 1.0,
        preserve: bool = False,
        preserve_margin: int = 1,
        preserve_threshold: float = 0.5,
        change_region: torch.Tensor | None = None,
        on_step: StepCallback | None = None,
    ) -> ChunkResult:
        """Denoises one chunk from noise, `steps` steps with classifier-free guidance `guidance` (> 1 runs the
        unconditional branch), the SCE reading `source_latents`; `preserve` (regenerating where the MPD's
        probability exceeds `preserve_threshold`, and `preserve_margin` latent pixels around) needs
        `capabilities.preserve`. `change_region` ((1, h, w) in [0, 1], None: everywhere) is where the
        conditioning frame's difference from the source counts as the edit, for adapters that read it."""
        ...

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> frames (F', 3, H, W) in [-1, 1], float32; F' may exceed the chunk's frames (a padded
        chunk), the API keeps the first ones."""
        ...
