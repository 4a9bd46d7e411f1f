"""Pixel and mask metrics for propagated videos: PSNR / PSNR_m, SSIM, removal residual, J&F, marker masks.

Conventions shared by every function here:

* a video is a uint8 RGB array of shape (T, H, W, 3) with values 0..255; a frame is (H, W, 3);
* a mask is a boolean array of shape (T, H, W) (or (H, W) for one frame), True = inside the region;
* all arithmetic is done in float64, so uint8 inputs never wrap around.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "boundary_f",
    "iou",
    "jaccard_and_f",
    "masks_from_marker",
    "psnr",
    "psnr_m",
    "removal_residual",
    "ssim",
]

# Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to structural similarity".
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
# ITU-R BT.601 luma weights (sum to exactly 1, so a grey pixel keeps its value).
_LUMA = np.array([0.299, 0.587, 0.114])


# --- validation ------------------------------------------------------------------------------------------------------


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Raise ValueError unless two arrays have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {a.shape} vs {b.shape}")


def _rgb(array: np.ndarray, what: str) -> np.ndarray:
    """Check an RGB video (T, H, W, 3) or frame (H, W, 3) and return it as a video (T, H, W, 3), dtype unchanged."""
    array = np.asarray(array)
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"{what}: expected an RGB frame (H, W, 3) or video (T, H, W, 3), got shape {array.shape}")
    return array[None] if array.ndim == 3 else array


def _masks(masks: np.ndarray, what: str) -> np.ndarray:
    """Check boolean masks (T, H, W) or one mask (H, W) and return them as (T, H, W) bool."""
    masks = np.asarray(masks)
    if masks.ndim not in (2, 3):
        raise ValueError(f"{what}: expected a mask (H, W) or masks (T, H, W), got shape {masks.shape}")
    if masks.dtype != np.bool_:
        raise ValueError(f"{what}: expected a boolean mask, got dtype {masks.dtype}")
    return masks[None] if masks.ndim == 2 else masks


# --- PSNR ------------------------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, *, mask: np.ndarray | None = None, max_value: float = 255.0) -> float:
    """PSNR in dB of two same-shape arrays (uint8 (T, H, W, 3) / (H, W, 3), or any numeric) over all pixels or a mask.

    The MSE is pooled over every selected value of the whole array (not averaged per frame). `mask` is a bool array
    of `a.shape` or of `a.shape[:-1]` (then broadcast over the channel axis). Identical inputs (MSE 0) give
    `math.inf`; an empty mask gives `math.nan`. `max_value` is the peak signal value (255 for uint8).
    """
    a, b = np.asarray(a), np.asarray(b)
    _same_shape(a, b, "psnr")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape == a.shape[:-1]:
            mask = np.broadcast_to(mask[..., None], a.shape)
        elif mask.shape != a.shape:
            raise ValueError(f"psnr: mask shape {mask.shape} fits neither {a.shape} nor {a.shape[:-1]}")
    if a.ndim < 2:
        a, b, mask = a[None], b[None], None if mask is None else mask[None]
    total, count = 0.0, 0
    # One leading slice at a time: a float64 copy of a whole video would cost 8x its size.
    for i in range(a.shape[0]):
        squared = (a[i].astype(np.float64) - b[i]) ** 2
        selected = squared if mask is None else squared[mask[i]]
        total, count = total + float(selected.sum()), count + selected.size
    if count == 0:
        return math.nan
    if total == 0.0:
        return math.inf
    return 10.0 * math.log10(max_value**2 * count / total)


def psnr_m(output: np.ndarray, source: np.ndarray, edit_mask: np.ndarray) -> float:
    """PSNR_m: PSNR (dB) of output vs source uint8 (T, H, W, 3) videos outside `edit_mask` (bool (T, H, W)).

    Measures how well the propagation kept what the edit should not touch; inf if that region is unchanged, nan
    if `edit_mask` covers everything.
    """
    edit_mask = _masks(edit_mask, "psnr_m edit_mask")
    output, source = np.asarray(output), np.asarray(source)
    if output.ndim == 3:
        edit_mask = edit_mask[0]
    return psnr(output, source, mask=~edit_mask)


# --- SSIM ------------------------------------------------------------------------------------------------------------


def _gaussian_kernel(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """1-D normalised Gaussian of `size` taps (float64, sums to 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-(x**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def _filter_valid(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (T, H, W) float64 images with a 1-D kernel along H then W."""
    taps = len(kernel)
    rows = images.shape[1] - taps + 1
    out = sum(w * images[:, k : k + rows, :] for k, w in enumerate(kernel))
    cols = images.shape[2] - taps + 1
    return sum(w * out[:, :, k : k + cols] for k, w in enumerate(kernel))


def _luma(video: np.ndarray) -> np.ndarray:
    """BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of an RGB (..., 3) array -> float64 (...), range 0..255."""
    return video.astype(np.float64) @ _LUMA


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """Mean SSIM of two uint8 RGB videos (T, H, W, 3) or frames (H, W, 3), in [-1, 1] (1 = identical).

    Computed on BT.601 luma, per frame, with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03 and
    population (biased) local statistics as in Wang et al. 2004. Filtering uses 'valid' padding: the map covers only
    windows that lie wholly inside the frame (frames must be at least 11 x 11). Result = mean over the map of each
    frame, then mean over frames.
    """
    a, b = _rgb(a, "ssim"), _rgb(b, "ssim")
    _same_shape(a, b, "ssim")
    if min(a.shape[1:3]) < _SSIM_WINDOW:
        raise ValueError(f"ssim: frames must be at least {_SSIM_WINDOW} x {_SSIM_WINDOW}, got {a.shape[1:3]}")
    return float(np.mean([_ssim_frame(_luma(x), _luma(y), data_range) for x, y in zip(a, b, strict=True)]))


def _ssim_frame(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Mean of the SSIM map of two float64 (H, W) luma images."""
    kernel = _gaussian_kernel()
    x, y = x[None], y[None]
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    var_x = _filter_valid(x * x, kernel) - mu_x**2
    var_y = _filter_valid(y * y, kernel) - mu_y**2
    cov = _filter_valid(x * y, kernel) - mu_x * mu_y
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


# --- removal residual ------------------------------------------------------------------------------------------------


def _l1(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel L1 distance summed over channels: (T, H, W, 3) pair -> float64 (T, H, W), range 0..765 for uint8."""
    # Frame by frame so only one frame is ever held as float64.
    return np.stack([np.abs(a.astype(np.float64) - b).sum(axis=-1) for a, b in zip(x, y, strict=True)])


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-nan values; nan (without a warning) when every value is nan."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _region_residual(remaining: np.ndarray, removable: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per-frame sum(remaining) / sum(removable) over the region's pixels where removable > 0, clipped to [0, 1]."""
    region = region & (removable > 0)
    denominator = np.where(region, removable, 0.0).sum(axis=(1, 2))
    numerator = np.where(region, remaining, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = numerator / denominator
    ratio[denominator == 0] = np.nan
    return np.clip(ratio, 0.0, 1.0)


def removal_residual(
    output: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    object_mask: np.ndarray,
    shadow_mask: np.ndarray | None,
) -> dict[str, np.ndarray | float]:
    """How much of a removed object and of its shadow is still visible: 0 = fully removed, 1 = nothing removed.

    Inputs: uint8 (T, H, W, 3) videos `output` (the model's result), `source` (before removal) and `target` (ground
    truth after removal); bool (T, H, W) `object_mask` and `shadow_mask` (None = no shadow annotation). With d the
    per-pixel L1 distance summed over RGB, for each frame and region R:

        residual_t = sum_{R'} d(output, target) / sum_{R'} d(source, target)

    where R' is R minus the pixels where source == target in every channel (they have nothing to remove, so they
    contribute nothing): the fraction of the source-vs-target difference that the output still has. The ratio is
    clipped to [0, 1] (above 1, an output further from the target than the source was, reads as 1). A frame whose R' is
    empty gives nan. Returns {"object": (T,) float64, "shadow": (T,) float64, "object_mean": float,
    "shadow_mean": float}; the means skip nan frames (nan if all are).
    """
    output = _rgb(output, "removal_residual output")
    source = _rgb(source, "removal_residual source")
    target = _rgb(target, "removal_residual target")
    _same_shape(output, source, "removal_residual output/source")
    _same_shape(output, target, "removal_residual output/target")
    remaining, removable = _l1(output, target), _l1(source, target)
    result: dict[str, np.ndarray | float] = {}
    for name, mask in (("object", object_mask), ("shadow", shadow_mask)):
        if mask is None:
            per_frame = np.full(output.shape[0], np.nan)
        else:
            mask = _masks(mask, f"removal_residual {name}_mask")
            _same_shape(mask, removable, f"removal_residual {name}_mask/video")
            per_frame = _region_residual(remaining, removable, mask)
        result[name] = per_frame
        result[f"{name}_mean"] = _nanmean(per_frame)
    return result


# --- masks: IoU, boundary F, J&F -------------------------------------------------------------------------------------


def _frame_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two bool (H, W) masks; 1.0 when both are empty."""
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)


def _mask_pair(pred: np.ndarray, gt: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of bool masks and return both as (T, H, W)."""
    pred, gt = _masks(pred, f"{what} pred"), _masks(gt, f"{what} gt")
    _same_shape(pred, gt, what)
    return pred, gt


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over frames of the per-frame IoU of bool masks (T, H, W) or (H, W), in [0, 1]; a frame where both masks
    are empty counts as 1.0."""
    pred, gt = _mask_pair(pred, gt, "iou")
    return float(np.mean([_frame_iou(p, g) for p, g in zip(pred, gt, strict=True)]))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """1-px inner boundary of a bool (H, W) mask: foreground pixels with a background 4-neighbour.

    Outside the image counts as foreground, so the frame's edge is not an object edge (a mask that leaves the frame
    has no contour there, as in DAVIS).
    """
    padded = np.pad(mask, 1, mode="constant", constant_values=True)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _disk_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, dx) offsets of a disk structuring element: dy^2 + dx^2 <= radius^2."""
    span = range(-radius, radius + 1)
    return [(dy, dx) for dy in span for dx in span if dy * dy + dx * dx <= radius * radius]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a bool (H, W) mask by a disk of `radius` pixels (pixels outside the image are background)."""
    if radius <= 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.pad(mask, radius, mode="constant", constant_values=False)
    out = np.zeros_like(mask)
    for dy, dx in _disk_offsets(radius):
        out |= padded[radius + dy : radius + dy + height, radius + dx : radius + dx + width]
    return out


def _tolerance_pixels(shape: tuple[int, int], bound_th: float) -> int:
    """DAVIS match tolerance: bound_th pixels if >= 1, else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return math.ceil(bound_th)
    return math.ceil(bound_th * math.hypot(*shape))


def boundary_f(pred: np.ndarray, gt: np.ndarray, *, bound_th: float = 0.008) -> float:
    """DAVIS boundary F-measure of two bool (H, W) masks, in [0, 1].

    Boundaries are 1-px inner mask edges; a boundary pixel matches when the other boundary lies within
    `_tolerance_pixels` (disk dilation). Both masks empty -> 1; exactly one empty -> 0.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _same_shape(pred, gt, "boundary_f")
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return 1.0
    if pred_any != gt_any:
        return 0.0
    pred_edge, gt_edge = _boundary(pred), _boundary(gt)
    n_pred, n_gt = int(pred_edge.sum()), int(gt_edge.sum())
    # Both masks fill the frame: no contour on either side, they agree.
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    radius = _tolerance_pixels(pred.shape, bound_th)
    precision = float((pred_edge & _dilate(gt_edge, radius)).sum() / n_pred)
    recall = float((gt_edge & _dilate(pred_edge, radius)).sum() / n_gt)
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def jaccard_and_f(pred_masks: np.ndarray, gt_masks: np.ndarray, *, bound_th: float = 0.008) -> dict[str, float]:
    """DAVIS region and contour accuracy of bool masks (T, H, W) or (H, W): {"J": mean IoU, "F": mean boundary F,
    "JF": (J + F) / 2}, each in [0, 1]. Frames with both masks empty score J = F = 1; one empty scores F = 0."""
    pred, gt = _mask_pair(pred_masks, gt_masks, "jaccard_and_f")
    j = iou(pred, gt)
    f = float(np.mean([boundary_f(p, g, bound_th=bound_th) for p, g in zip(pred, gt, strict=True)]))
    return {"J": j, "F": f, "JF": (j + f) / 2.0}


# --- track output ----------------------------------------------------------------------------------------------------


def masks_from_marker(video: np.ndarray, colour: tuple[int, int, int], *, tolerance: int = 40) -> np.ndarray:
    """Masks of the pixels painted in the marker colour: uint8 (T, H, W, 3) -> bool (T, H, W) ((H, W, 3) -> (H, W)).

    A pixel is marked when max over channels of |pixel - colour| <= tolerance (inclusive), so codec drift of up to
    `tolerance` levels per channel still counts.
    """
    video = np.asarray(video)
    if video.ndim not in (3, 4) or video.shape[-1] != 3:
        raise ValueError(f"masks_from_marker: expected (H, W, 3) or (T, H, W, 3), got shape {video.shape}")
    colour_array = np.asarray(colour, dtype=np.int16)
    if colour_array.shape != (3,):
        raise ValueError(f"masks_from_marker: colour must be (R, G, B), got {colour!r}")
    distance = np.abs(video.astype(np.int16) - colour_array).max(axis=-1)
    return distance <= tolerance
