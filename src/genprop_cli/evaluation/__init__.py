"""Evaluation metrics for propagated videos: pixel and mask metrics (numpy) and CLIP scores (torch, transformers).

`ClipScorer` is imported on first use, so the numpy metrics do not pull in transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genprop_cli.evaluation import metrics
from genprop_cli.evaluation.metrics import *

if TYPE_CHECKING:
    from genprop_cli.evaluation.clip_score import ClipScorer, ImageTransform

__all__ = ["ClipScorer", "ImageTransform"] + metrics.__all__

_LAZY = {"ClipScorer", "ImageTransform"}


def __getattr__(name: str) -> Any:
    """Import the CLIP scorer only when it is asked for."""
    if name in _LAZY:
        from genprop_cli.evaluation import clip_score

        return getattr(clip_score, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
