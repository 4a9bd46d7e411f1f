"""The contract between GenProp's generic modules (SCE, MPD, task embedding) and one denoiser family.

A backbone adapter knows the family's blocks, how to call one of them on its own, and where a residual
goes. It attaches GenProp through diffusers' `HookRegistry` (named, removable hooks), so no forward code
of the backbone is copied or patched. Adding a backbone family means one new file next to this one.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from genprop_cli.models.genprop import GenPropAdapter

HOOK_PREFIX = "genprop"


@dataclass
class ForwardCall:
    """What one GenProp denoiser call carries from its arguments to the hooks, and back out."""

    source_latents: torch.Tensor  # backbone-specific layout of the ORIGINAL video's latents
    task_ids: torch.Tensor  # (B,) long
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
    captured: dict[str, Any] = field(default_factory=dict)
    residuals: list[torch.Tensor] | None = None
    mask_logits: torch.Tensor | None = None
    sce_response: torch.Tensor | None = None


class CallSlot:
    """Holds the active `ForwardCall`; hooks pass through untouched when no GenProp call is active."""

    def __init__(self) -> None:
        self.call: ForwardCall | None = None


class Backbone(ABC):
    """Adapter from GenProp's generic modules to one diffusers denoiser family."""

    family: ClassVar[str]
    #: whether the SCE input itself (before its first block) is injected, as ControlNet does for U-Nets
    inject_input: ClassVar[bool] = False

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

    # --- running blocks on their own ---------------------------------------------------------------
    @abstractmethod
    def run_encoder_block(
        self, block: nn.Module, hidden: torch.Tensor, call: ForwardCall
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs one SCE block; returns the hidden state for the next block and the tensors to inject."""

    @abstractmethod
    def run_decoder_block(self, block: nn.Module, call: ForwardCall) -> torch.Tensor:
        """Runs the MPD's block copy on the inputs the backbone's last block received."""

    @abstractmethod
    def mask_logits_to_frames(self, logits: torch.Tensor, call: ForwardCall) -> torch.Tensor:
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
