"""GenProp's trainable parts, independent of the backbone family: the Selective Content Encoder (SCE),
the Mask Prediction Decoder (MPD) and the task embedding, plus the frozen-backbone wrapper that runs them.

At initialisation every injection layer and the task embedding are zero, so the wrapped denoiser computes
exactly what the bare backbone computes (tested). The adapter file is one safetensors file whose metadata
holds the small config needed to rebuild the modules around a backbone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genprop_cli.config import Task
from genprop_cli.errors import WeightsError
from genprop_cli.fileio import atomic_file
from genprop_cli.families.base import Backbone, CallSlot, ForwardCall

ADAPTER_FORMAT = "genprop-adapter"
ADAPTER_FORMAT_VERSION = 1


@dataclass(frozen=True)
class AdapterConfig:
    """What is needed, besides the backbone, to rebuild an adapter."""

    family: str
    sce_blocks: int
    tasks: tuple[str, ...] = field(default_factory=lambda: tuple(t.value for t in Task))
    # The SCE also reads the first frame's change (edited minus original latent, on every frame); files
    # written before this option existed lack the key and read as False.
    first_frame_change: bool = False
    # The weight L_MPD gave modified pixels in training (`[loss] mpd_inside_weight`). It shifts the MPD's
    # logits by log(weight); `GenPropAdapter.mask_probability` takes it back out. Older files read 1.
    mask_inside_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.mask_inside_weight > 0:
            raise ValueError(f"mask_inside_weight must be > 0, got {self.mask_inside_weight}")

    def to_metadata(self) -> dict[str, str]:
        body = {"format": ADAPTER_FORMAT, "version": ADAPTER_FORMAT_VERSION, **asdict(self)}
        return {"genprop": json.dumps(body)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, source: Path) -> AdapterConfig:
        try:
            body = json.loads((metadata or {})["genprop"])
            if body.get("format") != ADAPTER_FORMAT or body.get("version") != ADAPTER_FORMAT_VERSION:
                raise ValueError(body.get("format"))
            return cls(
                family=body["family"], sce_blocks=int(body["sce_blocks"]), tasks=tuple(body["tasks"]),
                first_frame_change=bool(body.get("first_frame_change", False)),
                mask_inside_weight=float(body.get("mask_inside_weight", 1.0)),
            )  # fmt: skip
        except (KeyError, ValueError, TypeError) as exc:
            raise WeightsError(f"{source} is not a GenProp adapter file (missing or bad 'genprop' metadata)") from exc


def zero_init(module: nn.Module) -> nn.Module:
    """Sets every parameter of `module` to zero (the ControlNet trick that makes the adapter a no-op at start)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def change_features(change: torch.Tensor) -> torch.Tensor:
    """What the change projections read, channels first: the signed change and its magnitude. The magnitude
    says "changed here" with one sign whatever the colours, which a zero-initialised linear layer can pick
    up at once; from the signed change alone it would need a nonlinearity to learn first."""
    return torch.cat([change, change.abs()], dim=1)


def check_reads_first_frame_change(backbone: Backbone) -> None:
    """Refuses an adapter reading the first frame's change on a family whose sampler does not give it."""
    if not backbone.first_frame_change:
        raise WeightsError(f"{backbone.family} backbones do not give the adapter the first frame's change")


class SelectiveContentEncoder(nn.Module):
    """Trainable copy of the backbone's first N blocks reading the ORIGINAL video, with zero-init injections.

    Its input is the backbone's own input features plus a projection of the original video's latents: the
    backbone -> SCE direction of the paper's bidirectional exchange, which lets the SCE see what was edited.
    With a `change_projection` (`AdapterConfig.first_frame_change`, beyond the paper) it also reads the first
    frame's change, edited minus original latent, so that where the edit is need not be inferred (the MPD
    reads it too).
    """

    def __init__(self, backbone: Backbone, num_blocks: int, *, first_frame_change: bool = False) -> None:
        super().__init__()
        self.source_projection = backbone.make_source_projection()
        self.blocks = backbone.copy_encoder_blocks(num_blocks)
        dtype = next(self.blocks.parameters()).dtype
        self.injections = nn.ModuleList(
            zero_init(backbone.make_injection(c)).to(dtype) for c in backbone.tap_channels(num_blocks)
        )
        self.inject_input = backbone.inject_input
        self.change_projection: nn.Module | None = None
        if first_frame_change:
            self.add_change_projection(backbone)

    def add_change_projection(self, backbone: Backbone) -> None:
        """Adds the zero-initialised projection of the first frame's change (a no-op until it trains)."""
        weight = self.source_projection.weight
        self.change_projection = zero_init(backbone.make_change_projection()).to(weight.device, weight.dtype)

    def forward(
        self,
        source: torch.Tensor,
        backbone_input: torch.Tensor,
        backbone: Backbone,
        call: ForwardCall,
        change: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """`change`: the first frame's change in `source`'s layout, needed exactly when the SCE reads it."""
        hidden = self.source_projection(source) + backbone_input
        if (change is None) != (self.change_projection is None):
            raise RuntimeError("the first frame's change must be given exactly when the adapter reads it")
        if change is not None:
            hidden = hidden + self.change_projection(change_features(change))
        taps = [hidden] if self.inject_input else []
        for block in self.blocks:
            hidden, block_taps = backbone.run_encoder_block(block, hidden, call)
            taps.extend(block_taps)
        return [inject(t) for inject, t in zip(self.injections, taps, strict=True)]


class MaskPredictionDecoder(nn.Module):
    """Copy of the backbone's last block plus a per-position MLP head: one modification-mask logit per latent pixel.
    With a `change_projection` (`AdapterConfig.first_frame_change`) the head also reads the first frame's change,
    so that L_MPD trains that reading directly rather than through the SCE's injections."""

    def __init__(self, backbone: Backbone, *, first_frame_change: bool = False) -> None:
        super().__init__()
        self.block = backbone.copy_decoder_block()
        self.head = backbone.make_mask_head().to(next(self.block.parameters()).dtype)
        self.change_projection: nn.Module | None = None
        if first_frame_change:
            self.add_change_projection(backbone)

    def add_change_projection(self, backbone: Backbone) -> None:
        """Adds the zero-initialised projection of the first frame's change onto the head's input."""
        weight = next(self.head.parameters())
        self.change_projection = zero_init(backbone.make_mask_change_projection()).to(weight.device, weight.dtype)

    def forward(self, backbone: Backbone, call: ForwardCall) -> torch.Tensor:
        features = backbone.run_decoder_block(self.block, call)
        if self.change_projection is not None:
            features = features + self.change_projection(change_features(backbone.mask_change_input(call)))
        return backbone.mask_logits_to_frames(self.head(features), call)


class TaskEmbedding(nn.Module):
    """One learned vector per task added to the backbone's conditioning embedding (zero at init)."""

    def __init__(self, num_tasks: int, dim: int) -> None:
        super().__init__()
        self.table = zero_init(nn.Embedding(num_tasks, dim))

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        return self.table(task_ids)


class GenPropAdapter(nn.Module):
    """SCE + MPD + task embedding: everything GenProp trains; saved and loaded as one safetensors file."""

    def __init__(self, backbone: Backbone, config: AdapterConfig) -> None:
        super().__init__()
        if config.family != backbone.family:
            raise WeightsError(
                f"adapter was made for a {config.family!r} backbone, but the variant's backbone is {backbone.family!r}"
            )
        if config.first_frame_change:
            check_reads_first_frame_change(backbone)
        self.config = config
        self.sce = SelectiveContentEncoder(backbone, config.sce_blocks, first_frame_change=config.first_frame_change)
        self.mpd = MaskPredictionDecoder(backbone, first_frame_change=config.first_frame_change)
        self.task_embedding = TaskEmbedding(len(config.tasks), backbone.embedding_dim)

    def task_id(self, task: Task | str) -> int:
        """Row of `task` in the task-embedding table: its place in the task list this adapter was saved with,
        so that adding or reordering `Task` members never re-indexes an existing adapter."""
        name = Task(task).value
        if name not in self.config.tasks:
            trained = ", ".join(self.config.tasks) or "none"
            raise WeightsError(f"this adapter was not trained for the {name!r} task (it knows: {trained})")
        return self.config.tasks.index(name)

    def add_first_frame_change(self, backbone: Backbone) -> None:
        """Makes the SCE read the first frame's change too, starting as a no-op: how an adapter trained
        without that input goes on training with it."""
        if not self.config.first_frame_change:
            check_reads_first_frame_change(backbone)
            self.sce.add_change_projection(backbone)
            self.mpd.add_change_projection(backbone)
            self.config = replace(self.config, first_frame_change=True)

    def set_mask_inside_weight(self, weight: float) -> None:
        """Records the L_MPD inside weight this adapter is (now) trained with, saved with it."""
        self.config = replace(self.config, mask_inside_weight=float(weight))

    def mask_probability(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """The probability that a pixel was modified, from the MPD's logits. Trained with modified pixels
        weighing w times more, the MPD's best logit is the true one plus log(w): at w = 4, a raw 0.5 means
        only a 1 in 5 chance. The output masks (`--masks`, `--composite`, tracking) and `--preserve`'s
        threshold read this calibrated probability."""
        return torch.sigmoid(mask_logits.float() - math.log(self.config.mask_inside_weight))

    def blocks(self) -> list[nn.Module]:
        """The adapter's copies of backbone blocks (SCE and MPD), for compilation."""
        return [*self.sce.blocks, self.mpd.block]

    def run_sce(
        self,
        source: torch.Tensor,
        backbone_input: torch.Tensor,
        backbone: Backbone,
        call: ForwardCall,
        probe: torch.Tensor | None = None,
        change: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The SCE's residuals; with a `probe`, also records in `call.sce_response` how much they change
        when the source is perturbed by it (finite differences, for the region-aware L_grad term). `change`:
        the first frame's change, in `source`'s layout, for an adapter that reads it."""
        residuals = self.sce(source, backbone_input, backbone, call, change)
        if probe is not None:
            probed = self.sce(source + probe, backbone_input, backbone, call, change)
            scale = probe.detach().square().mean().clamp_min(1e-12)
            changes = [(p - r).square().mean() for p, r in zip(probed, residuals, strict=True)]
            call.sce_response = torch.stack(changes).mean() / scale
        return residuals

    def save(self, path: Path) -> None:
        """Writes the adapter as one safetensors file (temp file + rename)."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_file(Path(path)) as temp:
            save_file(state, str(temp), metadata=self.config.to_metadata())

    @classmethod
    def load(cls, path: Path, backbone: Backbone) -> GenPropAdapter:
        """Rebuilds the adapter around `backbone` and loads its weights; refuses files that do not fit."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise WeightsError(f"{path}: only .safetensors adapter files are loaded")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata()
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several unrelated types for a damaged file
            raise WeightsError(f"{path}: cannot read adapter weights ({exc})") from exc
        config = AdapterConfig.from_metadata(metadata, path)
        adapter = cls(backbone, config)
        dtype = next(adapter.parameters()).dtype
        try:
            adapter.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise WeightsError(f"{path}: adapter does not fit this backbone ({first})") from exc
        return adapter


@dataclass
class GenPropOutput:
    sample: torch.Tensor  # the backbone's prediction, with GenProp's conditioning
    mask_logits: torch.Tensor | None  # (B, F, 1, h, w), B = mask_samples if given; None with predict_mask=False
    sce_response: torch.Tensor | None = None  # only with a probe: mean squared SCE change per unit perturbation


class GenPropDenoiser(nn.Module):
    """A frozen backbone denoiser with a GenProp adapter attached; called like the backbone plus the
    original video's latents and a task. The backbone's parameters never require gradients."""

    def __init__(self, backbone: Backbone, adapter: GenPropAdapter) -> None:
        super().__init__()
        self.backbone = backbone
        self.denoiser = backbone.denoiser
        self.adapter = adapter
        self.denoiser.requires_grad_(False)
        self._slot = CallSlot()
        backbone.attach(adapter, self._slot)

    def forward(
        self,
        *args: Any,
        source_latents: torch.Tensor,
        task_ids: torch.Tensor,
        sce_scale: float = 1.0,
        probe: torch.Tensor | None = None,
        predict_mask: bool = True,
        mask_samples: int | None = None,
        first_frame_change: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> GenPropOutput:
        """`predict_mask=False` skips the MPD; `mask_samples=k` runs it on the batch's last k samples only;
        `first_frame_change` (the layout of `source_latents`) only for an adapter that reads it."""
        call = ForwardCall(
            source_latents=source_latents, task_ids=task_ids, capture=self.backbone.new_capture(), sce_scale=sce_scale,
            probe=probe, predict_mask=predict_mask, mask_samples=mask_samples, first_frame_change=first_frame_change,
        )  # fmt: skip
        self._slot.call = call
        try:
            out = self.denoiser(*args, return_dict=False, **kwargs)[0]
        finally:
            self._slot.call = None
        if call.residuals is None or (predict_mask and call.mask_logits is None):
            raise RuntimeError("the GenProp hooks did not run: is the adapter attached to this denoiser?")
        return GenPropOutput(sample=out, mask_logits=call.mask_logits, sce_response=call.sce_response)

    def detach(self) -> None:
        """Removes the hooks; `self.denoiser` is the untouched bare backbone again."""
        self.backbone.detach()
