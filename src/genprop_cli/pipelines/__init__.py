"""Per-family GenProp samplers: each turns (original latents, conditioning frame, task) into one chunk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class ChunkResult:
    """What every family's sampler returns for one chunk."""

    latents: torch.Tensor  # the family's latent layout (SVD: (F, C, h, w); Wan: (C, F_lat, h, w))
    mask: torch.Tensor  # (F, 1, h, w) in [0, 1], the MPD's modification mask, one per output frame


def pipeline_class(family: str):
    """The sampler class of a backbone family (imported lazily: diffusers is slow to import)."""
    if family == "svd":
        from genprop_cli.pipelines.svd import GenPropSVDPipeline

        return GenPropSVDPipeline
    if family == "wan":
        from genprop_cli.pipelines.wan import GenPropWanPipeline

        return GenPropWanPipeline
    raise ValueError(f"no GenProp pipeline for backbone family {family!r}")


def quiet_libraries() -> None:
    """diffusers/transformers print load progress bars and advice; genprop has its own progress display."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
