"""The registry's data model: what one weights.toml says about each variant, and a variant found on disk."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from genprop_cli.config import TASK_NAMES
from genprop_cli.errors import UnknownVariantError

SCHEMA_VERSION = 1
PIPELINE_INDEX = "model_index.json"
WEIGHT_SUFFIX = ".safetensors"  # the only weight format loaded
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # refused: unpickling can run code
HEX40 = re.compile(r"[0-9a-fA-F]{40}")  # a git commit
HEX64 = re.compile(r"[0-9a-fA-F]{64}")  # a sha256


@dataclass(frozen=True)
class Source:
    """Where files come from: a package asset, a pinned Hub repository, or a local path."""

    kind: Literal["package", "hub", "local"]
    location: str  # package-relative path / "org/name" / absolute local path
    revision: str | None
    raw: str
    path: str | None = None  # a file inside a Hub repository (hf://org/name@rev/<path>)


@dataclass(frozen=True)
class Limits:
    """Working-resolution and length limits of a variant."""

    max_pixels: int
    multiple_of: int
    max_frames: int
    native_frames: int | None = None


@dataclass(frozen=True)
class Defaults:
    """Sampling defaults used when the user leaves an option unset."""

    steps: int
    guidance: float
    chunk: int
    overlap: int
    dtype: str
    preserve: bool = False  # sample as with --preserve unless the run says --no-preserve
    preserve_margin: int = 1  # latent pixels around the predicted region that --preserve regenerates too
    # The MPD's (calibrated) probability above which --preserve regenerates, per task (Task values): where
    # missing a change costs more than regenerating background (a removed object's ghost), it is lower.
    preserve_thresholds: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(TASK_NAMES, 0.5))

    def preserve_threshold(self, task: str) -> float:
        """The default `--preserve-threshold` of one task (`Task` value)."""
        return self.preserve_thresholds[task]


@dataclass(frozen=True)
class AdapterSpec:
    """The GenProp SCE+MPD weights of a variant (one safetensors file), or why there are none."""

    source: Source | None
    sha256: str | None
    published: bool
    note: str


@dataclass(frozen=True)
class VariantSpec:
    """One registry entry: a frozen backbone, its adapter, limits and defaults."""

    name: str
    description: str
    family: str
    backbone: Source
    backbone_files: dict[str, str]  # weight file -> sha256
    adapter: AdapterSpec
    limits: Limits
    defaults: Defaults
    backbone_configs: tuple[str, ...] = (PIPELINE_INDEX,)
    backbone_file_variant: str | None = None  # diffusers `variant=` ("fp16")
    untrained: bool = False  # random weights: runs, but its output is not a result

    @property
    def backbone_required(self) -> tuple[str, ...]:
        """Every file the backbone folder must hold: configs, then pinned weights."""
        return tuple(dict.fromkeys((PIPELINE_INDEX, *self.backbone_configs, *self.backbone_files)))


@dataclass(frozen=True)
class Registry:
    """All variants of one weights.toml."""

    default_variant: str
    variants: dict[str, VariantSpec]
    path: Path

    def get(self, name: str | None) -> VariantSpec:
        """The named variant (None -> the default one)."""
        key = self.default_variant if name is None else name
        if key not in self.variants:
            raise UnknownVariantError(f"unknown variant '{key}'; available: {', '.join(sorted(self.variants))}")
        return self.variants[key]


@dataclass(frozen=True)
class ResolvedVariant:
    """A variant whose files are on disk (and verified, unless verify=False)."""

    spec: VariantSpec
    backbone_dir: Path
    adapter_file: Path | None
    adapter_sha256: str | None
