"""A contact sheet an editor checks before any number: sampled frames as rows, input | output | mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from genprop_cli.images import save_png_atomic


def preview_indices(num_frames: int, rows: int) -> list[int]:
    """`rows` frame indices spread evenly from the first frame to the last."""
    if num_frames <= rows:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (rows - 1)) for i in range(rows)})


class ContactSheet:
    """Collects thumbnails of the chosen frames while a clip streams by, then writes one PNG."""

    def __init__(self, num_frames: int, size: tuple[int, int], *, rows: int = 4, thumb_width: int = 256) -> None:
        self.indices = set(preview_indices(num_frames, rows))
        width, height = size
        self.thumb = (thumb_width, max(1, round(height * thumb_width / width)))
        self.rows: dict[int, np.ndarray] = {}

    def add(self, index: int, source: np.ndarray, output: np.ndarray, mask: np.ndarray) -> None:
        """Keeps frame `index` if it is one of the sampled ones (uint8 (H, W, 3), (H, W, 3), (H, W))."""
        if index not in self.indices:
            return
        tiles = [self._thumb(source), self._thumb(output), self._thumb(np.repeat(mask[..., None], 3, axis=-1))]
        gap = np.full((self.thumb[1], 4, 3), 255, np.uint8)
        self.rows[index] = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)

    def _thumb(self, rgb: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(rgb).resize(self.thumb, Image.Resampling.BILINEAR))

    def save(self, path: Path) -> Path:
        rows = [self.rows[i] for i in sorted(self.rows)]
        gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
        sheet = np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0)
        save_png_atomic(Path(path), sheet)
        return Path(path)
