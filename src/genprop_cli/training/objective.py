"""What every family's training objective shares: the batch it encodes, the `Objective` protocol the trainer
drives, and `objective_for`, which asks the family registry for the sampler's objective.

Each family's objective lives in its folder (`families/svd/objective.py`: EDM v-prediction;
`families/wan/objective.py`: rectified flow); a family registered without one cannot be trained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from genprop_cli.errors import OptionError
from genprop_cli.families import get_family
from genprop_cli.training.losses import LossTerms, LossWeights, latent_mask

if TYPE_CHECKING:
    from genprop_cli.training.augment import SyntheticPair


@dataclass(frozen=True)
class NoiseSchedule:
    """The training config's [noise] table: log(sigma) ~ N(mean, std) for EDM objectives (SVD); objectives
    with their own noise-level distribution (Wan's flow matching: the scheduler's shift) ignore it."""

    log_sigma_mean: float = 0.7
    log_sigma_std: float = 1.6


@dataclass
class TrainingBatch:
    """Encoded inputs for one step; everything the frozen encoders compute, done once per batch. Tensors are
    in the family's layouts (its objective module says which)."""

    target: torch.Tensor  # latents of the original clip
    source: torch.Tensor  # latents of the synthetic clip (SCE input), same layout
    condition: torch.Tensor  # the backbone's first-frame conditioning, from the original clip
    image_embeds: torch.Tensor | None  # image embedding of the original first frame, None without an image encoder
    mask: torch.Tensor  # (B, F, 1, h, w) modification mask on the latent grid (F: latent frames)
    task_ids: torch.Tensor  # (B,)


class Objective(Protocol):
    """What the trainer asks of a family's training objective."""

    def encode(self, pairs, generator: torch.Generator) -> TrainingBatch:
        """Runs the frozen encoders on a list of `SyntheticPair`s."""
        ...

    def loss(self, denoiser, batch: TrainingBatch, weights: LossWeights, generator: torch.Generator) -> LossTerms:
        """One forward of the (possibly DDP-wrapped) GenProp denoiser and the region-aware loss terms."""
        ...


def to_model_frames(clip: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


#: A family's part of one encoded pair: the first-frame condition, the image embedding (None without an image
#: encoder) and the pair's mask at pixel resolution, one per latent frame.
FirstFrame = tuple[torch.Tensor, "torch.Tensor | None", torch.Tensor]
#: (pair, its original frames (F, 3, H, W) in [-1, 1], their latents) -> the family's `FirstFrame`.
PairConditioning = Callable[["SyntheticPair", torch.Tensor, torch.Tensor], FirstFrame]


@torch.no_grad()
def encode_batch(pipeline, pairs: Sequence[SyntheticPair], conditioning: PairConditioning) -> TrainingBatch:
    """Runs a sampler's frozen encoders on `SyntheticPair`s: the latents of the original clip (target) and the
    synthetic one (source) here, `conditioning` for the rest, in that order; the masks go to the latent grid."""
    targets, sources, conditions, embeds, masks, tasks = [], [], [], [], [], []
    for pair in pairs:
        original = to_model_frames(pair.original)
        target = pipeline.encode_frames(original)
        targets.append(target)
        sources.append(pipeline.encode_frames(to_model_frames(pair.edited)))
        condition, embed, mask = conditioning(pair, original, target)
        conditions.append(condition)
        embeds.append(embed)
        masks.append(mask)
        tasks.append(pipeline.adapter.task_id(pair.task))
    target = torch.stack(targets)
    device = target.device
    return TrainingBatch(
        target=target,
        source=torch.stack(sources),
        condition=torch.stack(conditions),
        image_embeds=torch.stack(embeds) if embeds[0] is not None else None,
        mask=latent_mask(torch.stack(masks).to(device), tuple(target.shape[-2:])),
        task_ids=torch.tensor(tasks, device=device),
    )


def objective_for(pipeline, schedule: NoiseSchedule = NoiseSchedule()) -> Objective:
    """The training objective of the sampler's backbone family, from the registry."""
    factory = get_family(pipeline.family).objective()
    if factory is None:
        raise OptionError(f"no training objective for backbone family {pipeline.family!r}")
    return factory(pipeline, schedule)
