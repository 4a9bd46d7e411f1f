"""Oracle upper bounds on an evaluation example, made from its ground truth (no method has these inputs).

* `true_region_weight`: the ground-truth edit region (object and shadow included), grown and feathered;
  compositing a method's output into the source with it keeps the source wherever the edit changes nothing,
  so that only the generation inside the region is scored.
* `first_stage_ceilings`: the ground truth itself through a latent model's first stage (VAE encode and
  decode), as is and composited inside the true region. No method that outputs through that first stage
  can score above the first without compositing, or above the second with a perfect mask.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genprop_cli.evaluation.runner import EvalExample, MethodOutput, composite


def true_region_weight(example: EvalExample, grow: int = 2, feather: float = 1.0) -> np.ndarray:
    """(T, H, W) float32: the ground-truth edit region (object and shadow included), grown by `grow` pixels
    and feathered by a Gaussian of `feather` pixels."""
    import cv2

    region = example.masks.copy()
    for extra in (example.object_masks, example.shadow_masks):
        if extra is not None:
            region |= extra
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    grown = [cv2.dilate(m.astype(np.uint8), kernel).astype(np.float32) for m in region]
    return np.stack([cv2.GaussianBlur(m, (0, 0), feather) for m in grown])


def first_stage_ceilings(example: EvalExample, round_trip: Callable[[np.ndarray], np.ndarray]) -> dict[str, MethodOutput]:
    """The ground truth through `round_trip` (a uint8 video -> the same video through the first stage): as
    is, and composited into the source inside the true region."""
    through = round_trip(example.target)
    return {
        "": MethodOutput(through),
        ", true-region composite": MethodOutput(composite(through, example.source, true_region_weight(example))),
    }
