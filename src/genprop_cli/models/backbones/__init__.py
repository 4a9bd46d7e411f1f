"""Backbone adapters by family name; adding a family means one file and one line here."""

from __future__ import annotations

from torch import nn

from genprop_cli.models.backbones.base import Backbone
from genprop_cli.models.backbones.svd import SVDBackbone
from genprop_cli.models.backbones.wan import WanBackbone

BACKBONES: dict[str, type[Backbone]] = {b.family: b for b in (SVDBackbone, WanBackbone)}


def backbone_for(family: str, denoiser: nn.Module) -> Backbone:
    """Wraps a loaded denoiser in the adapter of its family."""
    try:
        return BACKBONES[family](denoiser)
    except KeyError:
        raise ValueError(f"unknown backbone family {family!r}; known: {', '.join(BACKBONES)}") from None
