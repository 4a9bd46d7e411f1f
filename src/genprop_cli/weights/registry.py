"""Reading weights.toml: every table and key checked, each error naming the file and the dotted key."""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from genprop_cli.config import CHUNK_SIZES, DTYPES, TASK_NAMES
from genprop_cli.errors import WeightsError
from genprop_cli.weights.locations import registry_path
from genprop_cli.weights.schema import (
    HEX64,
    PICKLE_SUFFIXES,
    PIPELINE_INDEX,
    SCHEMA_VERSION,
    WEIGHT_SUFFIX,
    AdapterSpec,
    Defaults,
    Limits,
    Registry,
    Source,
    VariantSpec,
)
from genprop_cli.weights.sources import check_relative, parse_source

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_T = TypeVar("_T")


class _Reader:
    """Typed access to TOML tables; every error names the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> WeightsError:
        """A WeightsError naming the file and the key."""
        return WeightsError(f"{self.path}: {key} {problem}")

    def table(self, data: dict[str, Any], key: str, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """A required sub-table whose keys are all in `allowed`."""
        value = self.req(data, key, dict, where)
        self.keys(value, allowed, _join(where, key))
        return value

    def keys(self, table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        """Refuse unknown keys (typos would otherwise silently fall back to defaults)."""
        for key in table:
            if key not in allowed:
                raise self.fail(_join(where, key), f"is not a known key (expected one of: {', '.join(allowed)})")

    def req(self, table: dict[str, Any], key: str, kind: type[_T], where: str) -> _T:
        """A required value of the given type."""
        if key not in table:
            raise self.fail(_join(where, key), "is missing")
        return self.typed(table[key], kind, _join(where, key))

    def opt(self, table: dict[str, Any], key: str, kind: type[_T], where: str, default: _T) -> _T:
        """An optional value of the given type."""
        return self.typed(table[key], kind, _join(where, key)) if key in table else default

    def typed(self, value: Any, kind: type[_T], key: str) -> _T:
        """`value` (read at `key`) if it has the given type; an integer is taken as a float."""
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"must be a {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
        return value

    def positive(self, table: dict[str, Any], key: str, where: str) -> int:
        """A required integer >= 1."""
        value = self.req(table, key, int, where)
        if value < 1:
            raise self.fail(_join(where, key), f"must be at least 1, got {value}")
        return value

    def source(self, raw: str, key: str) -> Source:
        """A source string, local paths taken relative to the registry's folder."""
        try:
            return parse_source(raw, base_dir=self.path.parent)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def sha256(self, value: Any, key: str) -> str:
        """A 64-hex sha256, lower-cased."""
        if not isinstance(value, str) or not HEX64.fullmatch(value):
            raise self.fail(key, f"must be a 64-hex sha256, got {value!r}")
        return value.lower()


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "table", list: "list"}


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def load_registry(path: Path | None = None) -> Registry:
    """Read and validate a weights.toml (default: registry_path())."""
    path = Path(path) if path is not None else registry_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"weights registry {path} does not exist; set GENPROP_REGISTRY or reinstall") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read weights registry {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise WeightsError(f"{path}: not valid TOML ({exc})") from None
    return _parse_registry(data, _Reader(path))


def _parse_registry(data: dict[str, Any], r: _Reader) -> Registry:
    r.keys(data, ("schema_version", "default_variant", "variants"), "")
    version = r.req(data, "schema_version", int, "")
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"is {version}; this genprop reads {SCHEMA_VERSION} (upgrade genprop-cli)")
    tables = r.req(data, "variants", dict, "")
    if not tables:
        raise r.fail("variants", "is empty")
    variants = {name: _parse_variant(name, r.req(tables, name, dict, "variants"), r) for name in tables}
    default = r.req(data, "default_variant", str, "")
    if default not in variants:
        raise r.fail("default_variant", f"'{default}' is not a variant (available: {', '.join(sorted(variants))})")
    return Registry(default, variants, r.path)


def _parse_variant(name: str, table: dict[str, Any], r: _Reader) -> VariantSpec:
    where = f"variants.{name}"
    if not _VARIANT_NAME.fullmatch(name):
        raise r.fail(where, "name must be lower-case letters, digits, '.', '_' or '-'")
    r.keys(table, ("description", "family", "untrained", "backbone", "adapter", "limits", "defaults"), where)
    backbone, files, configs, file_variant = _parse_backbone(table, where, r)
    return VariantSpec(
        name=name,
        description=r.req(table, "description", str, where),
        family=_parse_family(table, where, r),
        backbone=backbone,
        backbone_files=files,
        adapter=_parse_adapter(table, where, r),
        limits=_parse_limits(r.table(table, "limits", where, _LIMIT_KEYS), f"{where}.limits", r),
        defaults=_parse_defaults(r.table(table, "defaults", where, _DEFAULT_KEYS), f"{where}.defaults", r),
        backbone_configs=configs,
        backbone_file_variant=file_variant,
        untrained=r.opt(table, "untrained", bool, where, False),
    )


def _parse_family(table: dict[str, Any], where: str, r: _Reader) -> str:
    """The variant's backbone family, which must be one the family registry knows (`genprop_cli.families`)."""
    from genprop_cli.families import family_names

    family = r.req(table, "family", str, where)
    if family not in family_names():
        raise r.fail(f"{where}.family", f"'{family}' is not a backbone family (known: {', '.join(family_names())})")
    return family


_LIMIT_KEYS = ("max_pixels", "multiple_of", "max_frames", "native_frames")
_DEFAULT_KEYS = ("steps", "guidance", "chunk", "overlap", "dtype", "preserve", "preserve_margin", "preserve_threshold")


def _parse_backbone(
    table: dict[str, Any], where: str, r: _Reader
) -> tuple[Source, dict[str, str], tuple[str, ...], str | None]:
    bb = r.table(table, "backbone", where, ("source", "files", "configs", "file_variant"))
    where = f"{where}.backbone"
    source = r.source(r.req(bb, "source", str, where), f"{where}.source")
    if source.kind == "hub" and source.path:
        raise r.fail(f"{where}.source", "must name the repository root, not a file")
    files = _parse_files(r.opt(bb, "files", dict, where, {}), f"{where}.files", r)
    configs = tuple(_parse_configs(r.opt(bb, "configs", list, where, []), f"{where}.configs", r))
    file_variant = r.opt(bb, "file_variant", str, where, "") or None
    for rel in files:
        if file_variant and f".{file_variant}." not in PurePosixPath(rel).name:
            raise r.fail(f"{where}.files", f"'{rel}' is not a '{file_variant}' file (file_variant)")
    return source, files, configs or (PIPELINE_INDEX,), file_variant


def _parse_files(table: dict[str, Any], where: str, r: _Reader) -> dict[str, str]:
    files = {}
    for rel, digest in table.items():
        key = f'{where}."{rel}"'
        try:
            check_relative(rel, rel)
        except ValueError as exc:
            raise r.fail(key, str(exc)) from None
        if not rel.endswith(WEIGHT_SUFFIX):
            raise r.fail(key, "is not a .safetensors file; only safetensors are loaded")
        files[rel] = r.sha256(digest, key)
    return files


def _parse_configs(items: list[Any], where: str, r: _Reader) -> list[str]:
    for item in items:
        if not isinstance(item, str):
            raise r.fail(where, f"must list file paths, got {item!r}")
        try:
            check_relative(item, item)
        except ValueError as exc:
            raise r.fail(where, str(exc)) from None
        if item.endswith((WEIGHT_SUFFIX, *PICKLE_SUFFIXES)):
            raise r.fail(where, f"lists weights '{item}'; weight files belong in files with their sha256")
    return list(items)


def _parse_adapter(table: dict[str, Any], where: str, r: _Reader) -> AdapterSpec:
    ad = r.table(table, "adapter", where, ("source", "filename", "sha256", "published", "note"))
    where = f"{where}.adapter"
    published = r.opt(ad, "published", bool, where, True)
    note = r.opt(ad, "note", str, where, "")
    if not published:
        if not note:
            raise r.fail(f"{where}.note", "is missing (say why no adapter is published)")
        for key in ("source", "filename", "sha256"):
            if key in ad:
                raise r.fail(f"{where}.{key}", "must not be set when published = false")
        return AdapterSpec(None, None, False, note)
    source = r.source(r.req(ad, "source", str, where), f"{where}.source")
    source = _with_filename(source, r.opt(ad, "filename", str, where, ""), f"{where}.filename", r)
    name = source.path if source.kind == "hub" else source.location
    if source.kind == "hub" and (source.revision is None or name is None):
        raise r.fail(f"{where}.source", "must be hf://<org>/<name>@<40-hex commit> with a filename")
    if not str(name).endswith(WEIGHT_SUFFIX):
        raise r.fail(f"{where}.source", "is not a .safetensors file; only safetensors are loaded")
    sha256 = r.sha256(ad["sha256"], f"{where}.sha256") if "sha256" in ad else None
    return AdapterSpec(source, sha256, True, note)


def _with_filename(source: Source, filename: str, key: str, r: _Reader) -> Source:
    """Attach `filename` (hub sources only) as the file inside the repository."""
    if not filename:
        return source
    if source.kind != "hub" or source.path:
        raise r.fail(key, "is only for hf:// sources that do not already name a file")
    try:
        check_relative(filename, filename)
    except ValueError as exc:
        raise r.fail(key, str(exc)) from None
    return Source(source.kind, source.location, source.revision, source.raw, filename)


def _parse_limits(table: dict[str, Any], where: str, r: _Reader) -> Limits:
    native = r.opt(table, "native_frames", int, where, 0)
    if "native_frames" in table and native < 1:
        raise r.fail(f"{where}.native_frames", f"must be at least 1, got {native}")
    return Limits(
        max_pixels=r.positive(table, "max_pixels", where),
        multiple_of=r.positive(table, "multiple_of", where),
        max_frames=r.positive(table, "max_frames", where),
        native_frames=native or None,
    )


def _parse_defaults(table: dict[str, Any], where: str, r: _Reader) -> Defaults:
    chunk = r.req(table, "chunk", int, where)
    if chunk not in CHUNK_SIZES:
        raise r.fail(f"{where}.chunk", f"must be one of {', '.join(map(str, CHUNK_SIZES))}, got {chunk}")
    overlap = r.req(table, "overlap", int, where)
    if not 1 <= overlap < chunk:
        raise r.fail(f"{where}.overlap", f"must be at least 1 and smaller than chunk ({chunk}), got {overlap}")
    guidance = r.req(table, "guidance", float, where)
    if guidance < 0:
        raise r.fail(f"{where}.guidance", f"must be >= 0, got {guidance}")
    dtype = r.req(table, "dtype", str, where)
    if dtype not in DTYPES:
        raise r.fail(f"{where}.dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    margin = r.opt(table, "preserve_margin", int, where, 1)
    if margin < 0:
        raise r.fail(f"{where}.preserve_margin", f"must be >= 0, got {margin}")
    thresholds = _parse_preserve_thresholds(table.get("preserve_threshold", 0.5), f"{where}.preserve_threshold", r)
    preserve = r.opt(table, "preserve", bool, where, False)
    return Defaults(r.positive(table, "steps", where), guidance, chunk, overlap, dtype, preserve, margin, thresholds)


def _parse_preserve_thresholds(value: Any, key: str, r: _Reader) -> dict[str, float]:
    """One probability for every task, or a table giving each task (edit, remove, insert, track) its own."""
    if isinstance(value, dict):
        r.keys(value, TASK_NAMES, key)
        read = {task: (r.req(value, task, float, key), f"{key}.{task}") for task in TASK_NAMES}
    else:
        read = {task: (r.typed(value, float, key), key) for task in TASK_NAMES}
    for threshold, where in read.values():
        if not 0 < threshold < 1:
            raise r.fail(where, f"must be between 0 and 1, got {threshold}")
    return {task: threshold for task, (threshold, _) in read.items()}
