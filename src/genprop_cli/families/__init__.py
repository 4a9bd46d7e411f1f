"""The backbone families genprop runs on, in one registry; everything specific to a family is in its folder.

A family is one frozen image-to-video denoiser architecture that GenProp attaches to (SVD's U-Net, Wan's DiT).
Its folder `families/<name>/` holds:

* `backbone.py`: its `Backbone` (blocks, how one block runs, where a residual goes, the hook points) and the
  typed record its hooks capture during one denoiser call;
* `sampler.py`: its chunk sampler (the `ChunkSampler` protocol of `families/base.py`), which declares its
  `Capabilities`;
* `objective.py`: its training objective (optional: a family without one runs but cannot be trained);
* `tiny.py`: tiny random-weight builders (`genprop models build-random-tiny --family <layout>`);
* `__init__.py`: its registry entry, `FAMILY = Family(...)`, naming the above by import path.

Adding a family is that folder plus its name in `BUILTIN` below; generic code (`models/genprop.py`, the API,
training, `pipelines/acceleration.py`) asks the registry and the capabilities, never a family's name.

This module stays cheap to import (no torch, no diffusers: entries name their parts by import path and load
them on first use), so that weights.toml's `family =` can be checked against `family_names()`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union

from genprop_cli.errors import WeightsError

if TYPE_CHECKING:
    from genprop_cli.families.base import Backbone, ChunkSampler

#: How a `Family` names one of its parts: "package.module:attribute", imported on first use, or a callable
#: taking no argument that returns the part.
Loader = Union[str, Callable[[], Any]]

#: The families shipped with genprop, each the name of its folder here (whose `FAMILY` is registered).
BUILTIN = ("svd", "wan")


@dataclass(frozen=True)
class Capabilities:
    """What a family's sampler can do beyond the chunk contract; options needing one are refused elsewhere."""

    preserve: bool = False  # --preserve: latents outside the MPD's region anchored to the source at every step
    vae_tiling: bool = False  # --vae-tiling: the VAE has diffusers' tiled encode/decode
    attention_backends: bool = False  # --attention-backend: attention goes through diffusers' dispatcher
    text: bool = False  # --prompt: the backbone reads text


@dataclass(frozen=True)
class Family:
    """One registry entry: a family's name, what its sampler can do, and where its parts are."""

    name: str
    capabilities: Capabilities
    backbone_ref: Loader  # the `Backbone` subclass
    sampler_ref: Loader  # the `ChunkSampler` class
    objective_ref: Loader | None = None  # factory (sampler, NoiseSchedule) -> objective; None: not trainable
    tiny_refs: Mapping[str, Loader] = field(default_factory=dict)  # layout name -> builder (seed) -> diffusers pipeline

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiny_refs", MappingProxyType(dict(self.tiny_refs)))
        refs = [self.backbone_ref, self.sampler_ref, self.objective_ref, *self.tiny_refs.values()]
        for ref in refs:
            if isinstance(ref, str) and ref.count(":") != 1:
                raise ValueError(f"family {self.name!r}: {ref!r} is not 'package.module:attribute'")

    def backbone(self) -> type[Backbone]:
        """The family's `Backbone` class (imports it)."""
        return _load(self.backbone_ref)

    def sampler(self) -> type[ChunkSampler]:
        """The family's sampler class (imports it, and with it diffusers)."""
        return _load(self.sampler_ref)

    @property
    def trainable(self) -> bool:
        return self.objective_ref is not None

    def objective(self) -> Callable[..., Any] | None:
        """The training objective factory, `(sampler, NoiseSchedule) -> objective`; None if not trainable."""
        return None if self.objective_ref is None else _load(self.objective_ref)

    def tiny(self, layout: str) -> Callable[[int], Any]:
        """The builder of one tiny random-weight layout: `(seed) -> diffusers pipeline`."""
        return _load(self.tiny_refs[layout])


def _load(ref: Loader) -> Any:
    if callable(ref):
        return ref()
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Adds a family to the registry; its name and its tiny layout names must be new."""
    if family.name in _FAMILIES:
        raise ValueError(f"backbone family {family.name!r} is already registered")
    taken = sorted(set(tiny_layouts()) & set(family.tiny_refs))
    if taken:
        raise ValueError(f"family {family.name!r}: tiny layouts {', '.join(taken)} belong to another family")
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Removes a family (tests and plugins that register one for a while)."""
    _FAMILIES.pop(name, None)


def get_family(name: str) -> Family:
    """The registered family of that name; a `WeightsError` naming the known ones otherwise."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise WeightsError(f"unknown backbone family {name!r}; known: {', '.join(_FAMILIES)}") from None


def family_names() -> tuple[str, ...]:
    """Every registered family, built-in ones first."""
    return tuple(_FAMILIES)


def families_with(capability: str) -> tuple[str, ...]:
    """The registered families whose sampler has `capability` (a `Capabilities` field), for messages."""
    if capability not in {f.name for f in fields(Capabilities)}:
        raise ValueError(f"no capability {capability!r}")
    return tuple(name for name, family in _FAMILIES.items() if getattr(family.capabilities, capability))


def tiny_layouts() -> dict[str, str]:
    """Every tiny random-weight layout (`build-random-tiny --family`), mapped to the family it belongs to."""
    return {layout: family.name for family in _FAMILIES.values() for layout in family.tiny_refs}


def backbone_for(family: str, denoiser: Any) -> Backbone:
    """Wraps a loaded denoiser in the `Backbone` of its family."""
    return get_family(family).backbone()(denoiser)


def sampler_class(family: str) -> type[ChunkSampler]:
    """The sampler class of a family (imported on first use: diffusers is slow to import)."""
    return get_family(family).sampler()


def _register_builtin() -> None:
    for name in BUILTIN:
        register_family(importlib.import_module(f"{__name__}.{name}").FAMILY)


_register_builtin()
