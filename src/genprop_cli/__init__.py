"""genprop-cli: carry a first-frame edit through a whole video with Generative Video Propagation.

The public API is imported lazily so that `genprop --help` does not pay for importing torch/diffusers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GenProp": "genprop_cli.api",
    "Clip": "genprop_cli.api",
    "OutputFrame": "genprop_cli.api",
    "ProgressEvent": "genprop_cli.api",
    "RenderResult": "genprop_cli.api",
    "render": "genprop_cli.api",
    "propagate": "genprop_cli.api",
    "RunRequest": "genprop_cli.config",
    "RunSettings": "genprop_cli.config",
    "PropagationOptions": "genprop_cli.config",
    "Placement": "genprop_cli.config",
    "OutputOptions": "genprop_cli.config",
    "Task": "genprop_cli.config",
    "GenPropError": "genprop_cli.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genprop_cli' has no attribute {name!r}")
