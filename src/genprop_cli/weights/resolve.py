"""Resolving a variant: its backbone folder and adapter file on disk (downloaded from the Hub when allowed),
each checked against the sha256 the registry pins."""

from __future__ import annotations

from pathlib import Path

from genprop_cli.errors import AdapterUnavailableError, WeightsError
from genprop_cli.weights.hub import hub_file, hub_offline, hub_snapshot
from genprop_cli.weights.integrity import digest_file, safetensors_complete, verify_file
from genprop_cli.weights.locations import local_root
from genprop_cli.weights.registry import load_registry
from genprop_cli.weights.schema import Registry, ResolvedVariant, Source, VariantSpec
from genprop_cli.weights.sources import parse_adapter_override


def _fix_hint(spec: VariantSpec, source: Source, path: Path | None = None) -> str:
    """What to do about a bad or missing file, by where it comes from."""
    if source.kind == "hub" and path is not None:
        # A snapshot entry links to a blob; huggingface_hub re-links an existing blob instead of
        # downloading it again, so the blob itself has to go.
        return f"delete {path.resolve()} and run `genprop models download {spec.name}`"
    if source.kind == "hub":
        return f"run `genprop models download {spec.name}`"
    if source.kind == "package":
        return "the installed package is damaged; reinstall genprop-cli"
    return "replace it with the file the registry pins, or update the registry"


def _unpinned(spec: VariantSpec) -> WeightsError:
    return WeightsError(
        f"variant '{spec.name}' backbone revision is not pinned in the weights registry; "
        f"set its source to hf://{spec.backbone.location}@<40-hex commit>"
    )


def _resolve_backbone(spec: VariantSpec, *, offline: bool, verify: bool, full: bool, registry: str) -> Path:
    """Local diffusers folder of the variant's backbone, with every pinned file checked."""
    source, required = spec.backbone, spec.backbone_required
    fresh: frozenset[str] = frozenset()
    if source.kind == "hub":
        if source.revision is None:
            raise _unpinned(spec)
        folder, fresh = hub_snapshot(source, required, offline, spec.name)
    else:
        folder = local_root(source)
        missing = [rel for rel in required if not (folder / rel).is_file()]
        if missing:
            raise WeightsError(
                f"variant '{spec.name}' backbone folder {folder} lacks {', '.join(missing[:3])}; "
                + _fix_hint(spec, source)
            )
    if verify:
        for rel, expected in spec.backbone_files.items():
            path = folder / rel
            hint = _fix_hint(spec, source, path)
            verify_file(path, expected, registry=registry, hint=hint, full=full, fresh=rel in fresh)
    return folder


def _fetch_adapter(source: Source, spec: VariantSpec, offline: bool, override: bool) -> tuple[Path, bool]:
    """Local path of an adapter file (downloaded for hub sources), and whether it was just fetched."""
    if source.kind == "hub":
        return hub_file(source, offline, spec.name if not override else None)
    path = local_root(source)
    if not path.is_file():
        raise WeightsError(f"variant '{spec.name}' adapter {path} does not exist; " + _fix_hint(spec, source))
    return path, False


def _adapter_unavailable(spec: VariantSpec) -> AdapterUnavailableError:
    note = f" ({spec.adapter.note})" if spec.adapter.note else ""
    return AdapterUnavailableError(
        f"variant '{spec.name}' has no published GenProp adapter weights{note}; "
        "train one with `genprop train` and pass it with --adapter PATH"
    )


def _resolve_adapter(
    spec: VariantSpec, override: Source | None, *, offline: bool, verify: bool, full: bool, registry: str
) -> tuple[Path | None, str | None]:
    """Adapter file and its sha256 (None, None when unpublished and not required)."""
    source = override or spec.adapter.source
    if source is None:
        return None, None
    path, fresh = _fetch_adapter(source, spec, offline, override is not None)
    expected = None if override else spec.adapter.sha256
    if not verify:
        return path, expected
    if expected:
        hint = _fix_hint(spec, source, path)
        digest = verify_file(path, expected, registry=registry, hint=hint, full=full, fresh=fresh)
    else:
        digest = digest_file(path, full=full, fresh=fresh)
    if not safetensors_complete(path):
        raise WeightsError(f"adapter {path} is not a valid safetensors file; " + _fix_hint(spec, source, path))
    return path, digest


def resolve_variant(
    name: str | None,
    *,
    adapter: str | None = None,
    offline: bool | None = None,
    verify: bool = True,
    require_adapter: bool = True,
    full_hash: bool = False,
    registry: Registry | None = None,
) -> ResolvedVariant:
    """Find (or download) a variant's backbone and adapter and verify them against the registry."""
    registry = registry if registry is not None else load_registry()
    spec = registry.get(name)
    override = parse_adapter_override(adapter) if adapter is not None else None
    # Refuse before touching the network: nobody should download gigabytes to then learn this.
    if override is None and not spec.adapter.published and require_adapter:
        raise _adapter_unavailable(spec)
    stay_offline = hub_offline(offline)
    checks = {"verify": verify, "full": full_hash, "registry": registry.path.name}
    backbone_dir = _resolve_backbone(spec, offline=stay_offline, **checks)
    adapter_file, adapter_sha = _resolve_adapter(spec, override, offline=stay_offline, **checks)
    return ResolvedVariant(spec, backbone_dir, adapter_file, adapter_sha)


def download_variant(name: str | None, *, registry: Registry | None = None) -> ResolvedVariant:
    """Fetch and verify everything a variant publishes (the backbone even without an adapter)."""
    return resolve_variant(name, offline=False, require_adapter=False, registry=registry)
