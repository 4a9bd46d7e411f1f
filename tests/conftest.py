"""Shared test set-up. Hub variables are read at import time, so they are set before anything imports
huggingface_hub: no test may reach the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- synthetic media (video_io / images tests) ---------------------------------------------------

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def clip_factory(tmp_path: Path) -> Callable[..., Path]:
    """make(name, **make_clip_options) -> path of a synthetic clip in this test's tmp folder."""
    from clips import make_clip

    def make(name: str = "clip.mp4", **options) -> Path:
        return make_clip(tmp_path / name, **options)

    return make


@pytest.fixture
def image_factory(tmp_path: Path) -> Callable[..., Path]:
    """make(name, size, mode="RGB", exif_orientation=None) -> path of a synthetic image."""
    from clips import make_image

    def make(name: str, size: tuple[int, int], mode: str = "RGB", **options) -> Path:
        return make_image(tmp_path / name, size, mode, **options)

    return make


# The weights hash cache must not touch the developer's ~/.cache during tests.
import tempfile  # noqa: E402

os.environ.setdefault("GENPROP_CACHE", tempfile.mkdtemp(prefix="genprop-test-cache-"))
