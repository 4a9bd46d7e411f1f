"""What `genprop models` shows: whether a variant's files are on disk, without downloading or hashing."""

from __future__ import annotations

from genprop_cli.weights.hub import cached_hub_file
from genprop_cli.weights.locations import local_root
from genprop_cli.weights.schema import VariantSpec


def _backbone_status(spec: VariantSpec) -> str:
    source = spec.backbone
    if source.kind == "hub":
        if source.revision is None:
            return "unpinned"
        present = all(cached_hub_file(source.location, source.revision, f) for f in spec.backbone_required)
    else:
        folder = local_root(source)
        present = all((folder / rel).is_file() for rel in spec.backbone_required)
    return "present" if present else "missing"


def _adapter_status(spec: VariantSpec) -> str:
    source = spec.adapter.source
    if not spec.adapter.published or source is None:
        return "unpublished"
    if source.kind == "hub":
        assert source.revision is not None and source.path is not None
        present = cached_hub_file(source.location, source.revision, source.path) is not None
    else:
        present = local_root(source).is_file()
    return "present" if present else "missing"


def variant_status(spec: VariantSpec) -> dict[str, str]:
    """What `genprop models` shows: whether the backbone and adapter are on disk, without downloading."""
    return {
        "name": spec.name,
        "description": spec.description,
        "family": spec.family,
        "backbone": _backbone_status(spec),
        "adapter": _adapter_status(spec),
    }
