"""Classical first-frame propagation baselines the toy world measures GenProp against (OpenCV).

* `flow_warp`: the first-frame edit (the pixels that differ from the source's first frame) is carried
  frame to frame along dense optical flow computed on the SOURCE video (Farneback) and composited over
  each source frame. It moves the edit with the scene but cannot make new content appear or vanish.
* `mask_then_inpaint`: for removal; the first-frame difference, thresholded, is the mask; it is carried
  by the same flow and each frame is filled inside it with OpenCV's inpainting (Telea), ProPainter-style
  in spirit. Anything outside the carried mask (a shadow the mask does not cover) stays.

Inputs and outputs are uint8 RGB videos (T, H, W, 3); the edited first frame is (H, W, 3).
"""

from __future__ import annotations

import numpy as np

DIFF_THRESHOLD = 24  # max abs channel difference that counts as "edited" (8-bit levels)


def edit_region(source_first: np.ndarray, edited_first: np.ndarray, threshold: int = DIFF_THRESHOLD) -> np.ndarray:
    """(H, W) bool: where the edited first frame differs from the source's first frame."""
    return (np.abs(source_first.astype(np.int16) - edited_first.astype(np.int16)).max(axis=-1)) > threshold


def backward_flows(source: np.ndarray) -> list[np.ndarray]:
    """Flow from frame t to frame t-1 for t = 1..T-1, each (H, W, 2) float32 (where each pixel came from)."""
    import cv2

    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in source]
    return [
        cv2.calcOpticalFlowFarneback(gray[t], gray[t - 1], None, 0.5, 3, 9, 3, 5, 1.1, 0)
        for t in range(1, len(gray))
    ]


def _warp(image: np.ndarray, flow: np.ndarray, interpolation: int) -> np.ndarray:
    """Samples `image` (frame t-1) at the positions the backward flow of frame t points to."""
    import cv2

    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], interpolation, borderMode=cv2.BORDER_REPLICATE)


def carried_masks(first_mask: np.ndarray, flows: list[np.ndarray]) -> np.ndarray:
    """The first frame's mask carried along the flows: (T, H, W) bool."""
    import cv2

    masks = [first_mask.astype(np.float32)]
    for flow in flows:
        masks.append(_warp(masks[-1], flow, cv2.INTER_LINEAR))
    return np.stack(masks) > 0.5


def flow_warp(source: np.ndarray, edited_first: np.ndarray) -> np.ndarray:
    """Carries the first-frame edit through the clip along the source's optical flow."""
    import cv2

    flows = backward_flows(source)
    masks = carried_masks(edit_region(source[0], edited_first), flows)
    layer = edited_first.copy()
    out = [edited_first.copy()]
    for t, flow in enumerate(flows, start=1):
        layer = _warp(layer, flow, cv2.INTER_LINEAR)
        out.append(np.where(masks[t][..., None], layer, source[t]))
    return np.stack(out)


def mask_then_inpaint(source: np.ndarray, edited_first: np.ndarray, dilate: int = 2) -> np.ndarray:
    """Removal by inpainting each frame inside the flow-carried first-frame difference mask."""
    import cv2

    masks = carried_masks(edit_region(source[0], edited_first), backward_flows(source))
    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
    out = [edited_first.copy()]
    for t in range(1, len(source)):
        mask = cv2.dilate(masks[t].astype(np.uint8) * 255, kernel)
        out.append(cv2.inpaint(source[t], mask, 3, cv2.INPAINT_TELEA))
    return np.stack(out)


BASELINES = {"flow_warp": flow_warp, "mask_then_inpaint": mask_then_inpaint}
