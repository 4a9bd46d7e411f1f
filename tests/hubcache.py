"""Lays files out as a pre-populated Hugging Face cache, for offline loading tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_hf_cache(cache: Path, repo: str, commit: str, files: dict[str, bytes]) -> Path:
    """Lay files out as huggingface_hub does: blobs named by sha256 (LFS) or git-sha1, symlinked."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    for rel, data in files.items():
        if rel.endswith(".safetensors"):
            blob_id = hashlib.sha256(data).hexdigest()
        else:
            blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = storage / "blobs" / blob_id
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot
