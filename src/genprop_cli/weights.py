"""Weights registry: read weights.toml, resolve a variant to local files and verify their sha256."""

from __future__ import annotations

import json
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Literal, TypeVar

from genprop_cli.config import CHUNK_SIZES, DTYPES
from genprop_cli.errors import (
    AdapterUnavailableError,
    ChecksumMismatchError,
    UnknownVariantError,
    WeightsError,
)
from genprop_cli.fileio import sha256_file, write_text_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCHEMA_VERSION = 1
PIPELINE_INDEX = "model_index.json"
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_HF_PREFIX = "hf://"
_PACKAGE_PREFIX = "package:"
_WEIGHT_SUFFIX = ".safetensors"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------------------------


def assets_dir() -> Path:
    """Folder of the weights shipped inside the package."""
    return Path(__file__).resolve().with_name("assets")


def registry_path() -> Path:
    """$GENPROP_REGISTRY, else the packaged weights.toml, else the repository's (editable installs)."""
    override = os.environ.get("GENPROP_REGISTRY")
    if override:
        return Path(override).expanduser()
    packaged = Path(__file__).resolve().with_name("weights.toml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "weights.toml"


def cache_dir() -> Path:
    """genprop's own cache (hash cache): $GENPROP_CACHE, else $XDG_CACHE_HOME/genprop or ~/.cache/genprop."""
    override = os.environ.get("GENPROP_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genprop"


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def parse_source(raw: str, *, base_dir: Path | None = None) -> Source:
    """Parse a source string; relative local paths are taken from base_dir (the registry's folder)."""
    if raw.startswith(_HF_PREFIX):
        return _parse_hub(raw)
    if raw.startswith(_PACKAGE_PREFIX):
        rel = raw[len(_PACKAGE_PREFIX) :]
        _check_relative(rel, raw)
        return Source("package", rel, None, raw)
    if not raw:
        raise ValueError("is empty")
    path = Path(raw).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return Source("local", str(path), None, raw)


def _parse_hub(raw: str) -> Source:
    """hf://org/name[@<40-hex>[/path/in/repo]]; the revision is None when absent."""
    body = raw[len(_HF_PREFIX) :]
    repo, at, rest = body.partition("@")
    revision, _, path = rest.partition("/") if at else ("", "", "")
    if not _REPO_ID.fullmatch(repo):
        raise ValueError(f"{raw!r} is not hf://<org>/<name>@<40-hex commit>[/<file>]")
    if at and not _HEX40.fullmatch(revision):
        raise ValueError(f"revision {revision!r} in {raw!r} is not a 40-hex commit (branches and tags move)")
    if path:
        _check_relative(path, raw)
    return Source("hub", repo, revision.lower() or None, raw, path or None)


def _check_relative(rel: str, raw: str) -> None:
    """Reject empty, absolute or parent-escaping relative paths."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or ".." in parts or "\\" in rel:
        raise ValueError(f"{raw!r} must name a relative path without '..'")


def parse_adapter_override(value: str) -> Source:
    """--adapter: an existing local .safetensors file or hf://org/name@<commit>/file.safetensors."""
    if value.startswith(_HF_PREFIX):
        try:
            source = _parse_hub(value)
        except ValueError as exc:
            raise WeightsError(f"--adapter {exc}") from None
        if source.revision is None or source.path is None:
            raise WeightsError(f"--adapter {value!r} must be hf://<org>/<name>@<40-hex commit>/<file>.safetensors")
        _require_safetensors(source.path, f"--adapter {value}")
        return source
    path = Path(value).expanduser()
    _require_safetensors(path.name, f"--adapter {value}")
    if not path.is_file():
        raise WeightsError(f"--adapter {value}: no such file; pass an existing .safetensors adapter")
    return Source("local", str(path.resolve()), None, value)


def _require_safetensors(name: str, what: str) -> None:
    """Only safetensors are loaded: pickled checkpoints can run code."""
    if not name.endswith(_WEIGHT_SUFFIX):
        suffix = PurePosixPath(name).suffix or "no extension"
        raise WeightsError(
            f"{what}: only safetensors are loaded (got {suffix}); "
            "convert it with safetensors.torch.save_file and pass the .safetensors file"
        )


# ---------------------------------------------------------------------------------------------
# Registry loading
# ---------------------------------------------------------------------------------------------


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
        return self._typed(table[key], kind, _join(where, key))

    def opt(self, table: dict[str, Any], key: str, kind: type[_T], where: str, default: _T) -> _T:
        """An optional value of the given type."""
        return self._typed(table[key], kind, _join(where, key)) if key in table else default

    def _typed(self, value: Any, kind: type[_T], key: str) -> _T:
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
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
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
        family=r.req(table, "family", str, where),
        backbone=backbone,
        backbone_files=files,
        adapter=_parse_adapter(table, where, r),
        limits=_parse_limits(r.table(table, "limits", where, _LIMIT_KEYS), f"{where}.limits", r),
        defaults=_parse_defaults(r.table(table, "defaults", where, _DEFAULT_KEYS), f"{where}.defaults", r),
        backbone_configs=configs,
        backbone_file_variant=file_variant,
        untrained=r.opt(table, "untrained", bool, where, False),
    )


_LIMIT_KEYS = ("max_pixels", "multiple_of", "max_frames", "native_frames")
_DEFAULT_KEYS = ("steps", "guidance", "chunk", "overlap", "dtype")


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
            _check_relative(rel, rel)
        except ValueError as exc:
            raise r.fail(key, str(exc)) from None
        if not rel.endswith(_WEIGHT_SUFFIX):
            raise r.fail(key, "is not a .safetensors file; only safetensors are loaded")
        files[rel] = r.sha256(digest, key)
    return files


def _parse_configs(items: list[Any], where: str, r: _Reader) -> list[str]:
    for item in items:
        if not isinstance(item, str):
            raise r.fail(where, f"must list file paths, got {item!r}")
        try:
            _check_relative(item, item)
        except ValueError as exc:
            raise r.fail(where, str(exc)) from None
        if item.endswith((_WEIGHT_SUFFIX, *_PICKLE_SUFFIXES)):
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
    if not str(name).endswith(_WEIGHT_SUFFIX):
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
        _check_relative(filename, filename)
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
    return Defaults(r.positive(table, "steps", where), guidance, chunk, overlap, dtype)


# ---------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------


def _hash_cache_file() -> Path:
    return cache_dir() / "sha256-cache.json"


def _cache_key(path: Path) -> tuple[str, str]:
    """(real path, record key): a record is valid only while size and mtime_ns are unchanged."""
    real = path.resolve()
    stat = real.stat()
    return str(real), f"{real}|{stat.st_size}|{stat.st_mtime_ns}"


def _cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (real path, size, mtime_ns) so big files are hashed once."""
    _, key = _cache_key(path)
    known = _read_hash_cache().get(key)
    if isinstance(known, str):
        return known
    digest = sha256_file(path.resolve())
    _remember(path, digest)
    return digest


def _remember(path: Path, digest: str) -> None:
    """Record a file's sha256 for its current size and mtime, dropping older records of it."""
    real, key = _cache_key(path)
    cache = {k: v for k, v in _read_hash_cache().items() if not k.startswith(f"{real}|")}
    cache[key] = digest
    _write_hash_cache(cache)


def _read_hash_cache() -> dict[str, Any]:
    try:
        data = json.loads(_hash_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_hash_cache(cache: dict[str, Any]) -> None:
    """Best effort: a read-only cache folder only costs re-hashing next time."""
    target = _hash_cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, json.dumps(cache, indent=0, sort_keys=True))
    except OSError:
        pass


def safetensors_complete(path: Path) -> bool:
    """True when the file's size is exactly what its safetensors header declares (no truncation)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > min(size - 8, 100 << 20):
                return False
            header = json.loads(handle.read(header_len))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError, AttributeError):
        return False
    return size == 8 + header_len + max(ends, default=0)


def _content_addressed(path: Path, digest: str) -> bool:
    """True for an HF cache blob named by this sha256 whose size matches its safetensors header."""
    return path.resolve().name == digest and safetensors_complete(path)


def _verify(path: Path, expected: str, *, registry: str, hint: str, full: bool, fresh: bool) -> str:
    """Check a file against its pinned sha256; return the digest."""
    # huggingface_hub names LFS blobs by their sha256, so a blob it has just downloaded under the
    # expected name is trusted without re-reading it. Blobs of unknown history are hashed once
    # (then cached by size and mtime): a blob edited in place keeps its name, not its content.
    if fresh and not full and _content_addressed(path, expected):
        _remember(path, expected)
        return expected
    got = sha256_file(path) if full else _cached_sha256(path)
    if got != expected:
        raise ChecksumMismatchError(f"{path}: sha256 {got} does not match {registry} {expected}; {hint}")
    return got


def _digest(path: Path, *, full: bool, fresh: bool) -> str:
    """sha256 of an unpinned file (for the run record)."""
    name = path.resolve().name
    if fresh and not full and _HEX64.fullmatch(name) and _content_addressed(path, name):
        _remember(path, name)
        return name
    return sha256_file(path) if full else _cached_sha256(path)


# ---------------------------------------------------------------------------------------------
# Hugging Face Hub access
# ---------------------------------------------------------------------------------------------


def _hub_offline(offline: bool | None) -> bool:
    """offline=None follows huggingface_hub's HF_HUB_OFFLINE."""
    if offline is not None:
        return offline
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _cached_hub_file(repo: str, revision: str, filename: str) -> Path | None:
    """Path of a file in the HF cache snapshot for this commit, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _missing_hint(what: str, variant: str | None) -> str:
    from huggingface_hub import constants

    why = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    fix = f"run `genprop models download {variant}`" if variant else "run it once"
    return (
        f"{what} is not in the Hugging Face cache {_hub_cache_dir()} and downloads are off{why}; "
        f"{fix} with network access, or set HF_HOME to a cache that has it"
    )


def _hub_call(fn: Callable[[], _T], repo: str, revision: str, what: str, variant: str | None) -> _T:
    """Run a huggingface_hub download, turning its errors into one-line WeightsErrors."""
    from huggingface_hub import errors

    try:
        return fn()
    except errors.GatedRepoError:
        raise WeightsError(
            f"{repo} is gated on the Hugging Face Hub: accept its licence at https://huggingface.co/{repo} "
            "and log in with `hf auth login` (or set HF_TOKEN), then retry"
        ) from None
    except errors.RevisionNotFoundError:
        raise WeightsError(f"commit {revision} does not exist in {repo}; fix the pin in the weights registry") from None
    except errors.RepositoryNotFoundError:
        raise WeightsError(
            f"Hugging Face repository {repo} was not found or needs a login (`hf auth login` or HF_TOKEN)"
        ) from None
    except errors.LocalEntryNotFoundError:
        raise WeightsError(_missing_hint(what, variant)) from None
    except errors.EntryNotFoundError:
        raise WeightsError(f"{what} does not exist in {repo} at commit {revision}") from None
    except (errors.HfHubHTTPError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot download {what} from {repo}: {detail}; check your connection and retry") from None


def _hub_snapshot(
    source: Source, files: tuple[str, ...], offline: bool, variant: str | None
) -> tuple[Path, frozenset[str]]:
    """Snapshot folder holding `files` at the pinned commit, and which of them were just downloaded."""
    assert source.revision is not None
    repo, revision = source.location, source.revision
    what = f"{repo}@{revision[:12]}"
    missing = [f for f in files if _cached_hub_file(repo, revision, f) is None]
    if missing and offline:
        raise WeightsError(_missing_hint(f"{what} file {missing[0]}", variant))
    if missing:
        from huggingface_hub import constants, snapshot_download

        fetch = lambda: snapshot_download(repo, revision=revision, allow_patterns=list(files))  # noqa: E731
        _hub_call(fetch, repo, revision, what, variant)
        still = [f for f in missing if _cached_hub_file(repo, revision, f) is None]
        if still and constants.HF_HUB_OFFLINE:
            raise WeightsError(_missing_hint(f"{what} file {still[0]}", variant))
        if still:
            raise WeightsError(f"{still[0]} is not in {repo} at commit {revision}; fix the weights registry")
    anchor = _cached_hub_file(repo, revision, files[0])
    assert anchor is not None
    return anchor.parents[len(PurePosixPath(files[0]).parts) - 1], frozenset(missing)


def _hub_file(source: Source, offline: bool, variant: str | None) -> tuple[Path, bool]:
    """One pinned file from the HF cache (downloaded first unless offline), and whether it was just fetched."""
    assert source.revision is not None and source.path is not None
    repo, revision, rel = source.location, source.revision, source.path
    cached = _cached_hub_file(repo, revision, rel)
    if cached is not None:
        return cached, False
    if offline:
        raise WeightsError(_missing_hint(f"{repo}@{revision[:12]} file {rel}", variant))
    from huggingface_hub import hf_hub_download

    fetch = lambda: hf_hub_download(repo, rel, revision=revision)  # noqa: E731
    return Path(_hub_call(fetch, repo, revision, rel, variant)), True


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


def _local_root(source: Source) -> Path:
    """Folder or file of a package/local source."""
    return assets_dir() / source.location if source.kind == "package" else Path(source.location)


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
        folder, fresh = _hub_snapshot(source, required, offline, spec.name)
    else:
        folder = _local_root(source)
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
            _verify(path, expected, registry=registry, hint=hint, full=full, fresh=rel in fresh)
    return folder


def _fetch_adapter(source: Source, spec: VariantSpec, offline: bool, override: bool) -> tuple[Path, bool]:
    """Local path of an adapter file (downloaded for hub sources), and whether it was just fetched."""
    if source.kind == "hub":
        return _hub_file(source, offline, spec.name if not override else None)
    path = _local_root(source)
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
        digest = _verify(path, expected, registry=registry, hint=hint, full=full, fresh=fresh)
    else:
        digest = _digest(path, full=full, fresh=fresh)
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
    hub_offline = _hub_offline(offline)
    checks = {"verify": verify, "full": full_hash, "registry": registry.path.name}
    backbone_dir = _resolve_backbone(spec, offline=hub_offline, **checks)
    adapter_file, adapter_sha = _resolve_adapter(spec, override, offline=hub_offline, **checks)
    return ResolvedVariant(spec, backbone_dir, adapter_file, adapter_sha)


def download_variant(name: str | None, *, registry: Registry | None = None) -> ResolvedVariant:
    """Fetch and verify everything a variant publishes (the backbone even without an adapter)."""
    return resolve_variant(name, offline=False, require_adapter=False, registry=registry)


# ---------------------------------------------------------------------------------------------
# Status (no downloads, no hashing)
# ---------------------------------------------------------------------------------------------


def _backbone_status(spec: VariantSpec) -> str:
    source = spec.backbone
    if source.kind == "hub":
        if source.revision is None:
            return "unpinned"
        present = all(_cached_hub_file(source.location, source.revision, f) for f in spec.backbone_required)
    else:
        folder = _local_root(source)
        present = all((folder / rel).is_file() for rel in spec.backbone_required)
    return "present" if present else "missing"


def _adapter_status(spec: VariantSpec) -> str:
    source = spec.adapter.source
    if not spec.adapter.published or source is None:
        return "unpublished"
    if source.kind == "hub":
        assert source.revision is not None and source.path is not None
        present = _cached_hub_file(source.location, source.revision, source.path) is not None
    else:
        present = _local_root(source).is_file()
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


# ---------------------------------------------------------------------------------------------
# Maintainer helper: python -m genprop_cli.weights hash PATH...
# ---------------------------------------------------------------------------------------------


def hash_tree(path: Path) -> dict[str, str]:
    """sha256 of every .safetensors file under a folder, keyed by posix relative path."""
    files = sorted(p for p in path.rglob(f"*{_WEIGHT_SUFFIX}") if p.is_file())
    return {p.relative_to(path).as_posix(): sha256_file(p) for p in files}


def main(argv: list[str] | None = None) -> int:
    """Print registry lines for folders (`"file" = "<sha256>"`) and files (`sha256 = "..."`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "hash":
        print("usage: python -m genprop_cli.weights hash FOLDER_OR_FILE...", file=sys.stderr)
        return 2
    for arg in map(Path, args[1:]):
        if arg.is_file():
            print(f'sha256 = "{sha256_file(arg)}"  # {arg.name}')
            continue
        for rel, digest in hash_tree(arg).items():
            print(f'"{rel}" = "{digest}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
