"""Where the registry, the packaged weights and genprop's own cache live on this machine.

This module sits in genprop_cli/weights/, so the package folder is parents[1] of this file and the
repository root (editable installs) parents[3].
"""

from __future__ import annotations

import os
from pathlib import Path

from genprop_cli.weights.schema import Source

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # genprop_cli/


def assets_dir() -> Path:
    """Folder of the weights shipped inside the package."""
    return _PACKAGE_DIR / "assets"


def registry_path() -> Path:
    """$GENPROP_REGISTRY, else the packaged weights.toml, else the repository's (editable installs)."""
    override = os.environ.get("GENPROP_REGISTRY")
    if override:
        return Path(override).expanduser()
    packaged = _PACKAGE_DIR / "weights.toml"  # a file beside this folder (pyproject's force-include)
    if packaged.is_file():
        return packaged
    return _PACKAGE_DIR.parents[1] / "weights.toml"


def cache_dir() -> Path:
    """genprop's own cache (hash cache): $GENPROP_CACHE, else $XDG_CACHE_HOME/genprop or ~/.cache/genprop."""
    override = os.environ.get("GENPROP_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genprop"


def local_root(source: Source) -> Path:
    """Folder or file of a package/local source."""
    return assets_dir() / source.location if source.kind == "package" else Path(source.location)
