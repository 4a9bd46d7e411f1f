"""GenProp's region-aware loss, as pure functions:

    L = L_non-mask + lambda * L_mask + beta * L_grad + gamma * L_MPD      (lambda=2, beta=1, gamma=1)

`L_non-mask` and `L_mask` split the per-pixel denoising error by the modification mask (at latent
resolution), each averaged over its own region so that a small edit gets as much weight as the large
untouched background. `L_grad` is the SCE's finite-difference response to a perturbation of its input
inside the modified region (it is zero when the SCE ignores that region). `L_MPD` is the mask
prediction decoder's MSE against the modification mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    mask: float = 2.0  # lambda
    grad: float = 1.0  # beta
    mpd: float = 1.0  # gamma
    probe_scale: float = 0.05  # size of the finite-difference perturbation, in latent units
    # False: the paper's "w/o region-aware loss" ablation: one plain mean over all pixels, no L_grad.
    region_aware: bool = True
    # True: L_MPD's squared error is averaged inside and outside the mask separately and summed (as L_non-mask and
    # L_mask are), instead of one mean over all pixels, where a small object weighs next to nothing and an
    # all-zero prediction already scores well (mask area 5% -> MSE 0.05).
    mpd_balanced: bool = False
    # > 1: each pixel inside the mask weighs this much more in L_MPD's (weighted) mean. A fixed weight w moves the
    # MPD's 0.5 point to pixels that are inside with probability 1/(1+w); balancing (an inside weight of
    # area_out/area_in, 20 for a 5% object) moves it to 1/21 and the MPD marks 2.5-7x the object's area.
    mpd_inside_weight: float = 1.0
    # The fraction of steps whose noisy input is made from the SOURCE clip and which train L_MPD only. Under
    # --preserve the model sees exactly that wherever the MPD has not (yet) marked the edit: the source noised
    # to the step's level. Trained only on noised targets, which always show the edit, the MPD learns to read
    # the edit from them and, when they do not show it, marks nothing, and --preserve then keeps the source.
    mpd_source_noised: float = 0.0

    def __post_init__(self) -> None:
        if min(self.mask, self.grad, self.mpd) < 0 or self.probe_scale <= 0 or self.mpd_inside_weight <= 0:
            raise ValueError(f"loss weights must be >= 0, probe_scale and mpd_inside_weight > 0, got {self}")
        if not 0 <= self.mpd_source_noised <= 1:
            raise ValueError(f"mpd_source_noised is a fraction of steps, in [0, 1], got {self.mpd_source_noised}")
        if self.mpd_balanced and self.mpd_inside_weight != 1.0:
            raise ValueError("mpd_balanced and mpd_inside_weight are two ways of weighting L_MPD: set one")


@dataclass
class LossTerms:
    non_mask: torch.Tensor
    mask: torch.Tensor
    grad: torch.Tensor
    mpd: torch.Tensor
    total: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in vars(self).items()}


def region_means(per_pixel: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of `per_pixel` (B, F, C, h, w) outside and inside `mask` (B, F, 1, h, w) in [0, 1]."""
    channels = per_pixel.shape[2]
    inside = mask.expand_as(per_pixel)
    outside = 1 - inside
    non_mask = (per_pixel * outside).sum() / (outside.sum() + eps * channels)
    in_mask = (per_pixel * inside).sum() / (inside.sum() + eps * channels)
    return non_mask, in_mask


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel masks (B, F, H, W) -> soft latent-grid masks (B, F, 1, h, w), by area averaging."""
    b, f = mask.shape[:2]
    resized = F.adaptive_avg_pool2d(mask.float().flatten(0, 1)[:, None], size)
    return resized.reshape(b, f, 1, *size)


def mpd_loss(
    mask_logits: torch.Tensor, mask: torch.Tensor, balanced: bool = False, inside_weight: float = 1.0
) -> torch.Tensor:
    """MSE between the MPD's predicted mask and the modification mask, both (B, F, 1, h, w); `balanced`: the
    mean squared error outside the mask plus the mean inside it; `inside_weight`: a weighted mean in which
    masked pixels weigh that much more (1: the plain mean)."""
    error = (torch.sigmoid(mask_logits.float()) - mask.float()).square()
    if balanced:
        outside, inside = region_means(error, mask.float())
        return outside + inside
    weight = 1 + (inside_weight - 1) * mask.float()
    return (weight * error).sum() / weight.expand_as(error).sum()


def draws_source_noised(weights: LossWeights, generator: torch.Generator, device: torch.device) -> bool:
    """Whether this step is one of the `mpd_source_noised` steps (no random draw when there are none, so that
    runs without them keep their random stream)."""
    if weights.mpd_source_noised <= 0:
        return False
    return bool(torch.rand(1, generator=generator, device=device).item() < weights.mpd_source_noised)


def mpd_only(terms: LossTerms, weights: LossWeights) -> LossTerms:
    """A source-noised step's terms: L_MPD alone. The denoising terms, which would compare a source-made input
    with the target, do not train and are NaN, "not measured": a log that averaged zeros for them would read
    half their size under `mpd_source_noised = 0.5`."""
    unmeasured = terms.mpd.new_full((), float("nan"))
    return LossTerms(non_mask=unmeasured, mask=unmeasured, grad=unmeasured, mpd=terms.mpd, total=weights.mpd * terms.mpd)


def combine(
    per_pixel: torch.Tensor,
    mask: torch.Tensor,
    mask_logits: torch.Tensor,
    sce_response: torch.Tensor | None,
    weights: LossWeights,
) -> LossTerms:
    """All four terms and their weighted sum."""
    non_mask, in_mask = region_means(per_pixel, mask)
    grad = sce_response if sce_response is not None else per_pixel.new_zeros(())
    mpd = mpd_loss(mask_logits, mask, weights.mpd_balanced, weights.mpd_inside_weight)
    if weights.region_aware:
        total = non_mask + weights.mask * in_mask + weights.grad * grad + weights.mpd * mpd
    else:
        total = per_pixel.mean() + weights.mpd * mpd
    return LossTerms(non_mask=non_mask, mask=in_mask, grad=grad, mpd=mpd, total=total)
