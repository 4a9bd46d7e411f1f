"""Work folders: what lets an interrupted render continue from its last finished chunk.

Each finished chunk's sampler output (its latents and MPD masks, a few MB even at full size) is written to
`<work>/chunk-NNNNN.safetensors` with a temp file, fsync and rename, so a crash, Ctrl-C, `kill -9` or power
loss leaves only whole chunks behind. Running the same command again replays the stored chunks (decode,
stitch, encode: the cheap part) and samples only the missing ones; chunk k is seeded by its first frame
index, so the result is the same as an uninterrupted run. Everything the chunks depend on (the input video's
and the edited frame's content hashes, the variant and its weight hashes, the options, the device type,
dtype and working size) forms the folder's key: a folder made under any other key is refused with a message
naming what differs, never reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genprop_cli.errors import OutputError
from genprop_cli.fileio import write_bytes_atomic

WORK_FORMAT = 1
MANIFEST = "manifest.json"


def default_work_dir(output: Path) -> Path:
    """`out/clip.genprop-remove.mp4` -> `out/.clip.genprop-remove.mp4.genprop-work` (hidden, beside it)."""
    output = Path(output)
    return output.with_name(f".{output.name}.genprop-work")


def array_sha256(array: np.ndarray) -> str:
    digest = hashlib.sha256(repr((array.shape, str(array.dtype))).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ChunkRecord:
    latents: torch.Tensor
    mask: torch.Tensor


class ChunkStore:
    """One run's finished chunks on disk; `open` creates the folder or checks that it belongs to this run."""

    def __init__(self, folder: Path, key: dict[str, Any]) -> None:
        self.folder, self.key = Path(folder), key

    @classmethod
    def open(cls, folder: Path, key: dict[str, Any]) -> ChunkStore:
        folder = Path(folder)
        key = json.loads(json.dumps(key))  # the form it has once read back from the manifest
        manifest = folder / MANIFEST
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"work folder {folder} is not a folder")
            try:
                saved = json.loads(manifest.read_text())
            except (OSError, ValueError):
                if any(folder.iterdir()):
                    raise OutputError(f"{folder} is not a genprop work folder (no readable {MANIFEST}); remove it") from None
                saved = None
            if saved is not None:
                if saved.get("format") != WORK_FORMAT or saved.get("key") != key:
                    differs = _differences(saved.get("key") or {}, key)
                    raise OutputError(
                        f"work folder {folder} belongs to another run ({differs} differ); remove it to start over "
                        "or pass another --work-dir"
                    )
                return cls(folder, key)
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(manifest, json.dumps({"format": WORK_FORMAT, "key": key}, indent=2).encode(), durable=True)
        return cls(folder, key)

    def sub(self, name: str) -> ChunkStore:
        """A store for one run of a keyframe render (segment, direction), under the same key."""
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        return ChunkStore(folder, self.key)

    def total(self) -> int:
        """Stored chunks in this store and all its sub-stores."""
        return sum(1 for _ in self.folder.rglob("chunk-*.safetensors"))

    def path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:05d}.safetensors"

    def done(self) -> int:
        """How many chunks, counted from the first, are stored."""
        n = 0
        while self.path(n).is_file():
            n += 1
        return n

    def load(self, index: int) -> ChunkRecord | None:
        path = self.path(index)
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
            return ChunkRecord(latents=tensors["latents"], mask=tensors["mask"])
        except Exception:  # noqa: BLE001 - a damaged record is redone, never trusted
            path.unlink(missing_ok=True)
            return None

    def save(self, index: int, latents: torch.Tensor, mask: torch.Tensor) -> None:
        from safetensors.torch import save

        data = save({"latents": latents.detach().contiguous().cpu(), "mask": mask.detach().contiguous().cpu()})
        write_bytes_atomic(self.path(index), data, durable=True)  # whole or absent after a power loss

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _differences(saved: dict[str, Any], key: dict[str, Any]) -> str:
    names = sorted({k for k in saved.keys() | key.keys() if saved.get(k) != key.get(k)})
    nested = [f"{k}.{sub}" for k in names if isinstance(key.get(k), dict) and isinstance(saved.get(k), dict)
              for sub in sorted(set(saved[k]) | set(key[k])) if saved[k].get(sub) != key[k].get(sub)]  # fmt: skip
    shown = [n for n in names if not (isinstance(key.get(n), dict) and isinstance(saved.get(n), dict))] + nested
    return ", ".join(shown) or "format"

