"""Weights registry: read weights.toml, resolve a variant to local files and verify their sha256.

    schema      the data model (Source, Limits, Defaults, AdapterSpec, VariantSpec, Registry, ResolvedVariant)
    sources     source strings (package:, hf://org/name@commit, local paths) and --adapter overrides
    locations   where the registry, the packaged assets and the hash cache are
    registry    reading and validating weights.toml
    integrity   sha256 checks, the hash cache, safetensors completeness, `python -m genprop_cli.weights hash`
    hub         the Hugging Face Hub (pinned commits, the HF cache, offline mode)
    resolve     a variant's backbone folder and adapter file on disk, downloaded when allowed
    status      whether a variant's files are present, without downloading or hashing
"""

from __future__ import annotations

from genprop_cli.fileio import sha256_file
from genprop_cli.weights.integrity import hash_tree, main, safetensors_complete
from genprop_cli.weights.locations import assets_dir, cache_dir, registry_path
from genprop_cli.weights.registry import load_registry
from genprop_cli.weights.resolve import download_variant, resolve_variant
from genprop_cli.weights.schema import (
    PIPELINE_INDEX,
    SCHEMA_VERSION,
    AdapterSpec,
    Defaults,
    Limits,
    Registry,
    ResolvedVariant,
    Source,
    VariantSpec,
)
from genprop_cli.weights.sources import parse_adapter_override, parse_source
from genprop_cli.weights.status import variant_status

__all__ = [
    "PIPELINE_INDEX",
    "SCHEMA_VERSION",
    "AdapterSpec",
    "Defaults",
    "Limits",
    "Registry",
    "ResolvedVariant",
    "Source",
    "VariantSpec",
    "assets_dir",
    "cache_dir",
    "download_variant",
    "hash_tree",
    "load_registry",
    "main",
    "parse_adapter_override",
    "parse_source",
    "registry_path",
    "resolve_variant",
    "safetensors_complete",
    "sha256_file",
    "variant_status",
]
