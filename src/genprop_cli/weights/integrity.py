"""File integrity: sha256 checks against the registry, the hash cache, safetensors completeness, and the
maintainer's `python -m genprop_cli.weights hash PATH...` that prints registry lines."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

from genprop_cli.errors import ChecksumMismatchError
from genprop_cli.fileio import sha256_file, write_text_atomic
from genprop_cli.weights.locations import cache_dir
from genprop_cli.weights.schema import HEX64, WEIGHT_SUFFIX


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


def verify_file(path: Path, expected: str, *, registry: str, hint: str, full: bool, fresh: bool) -> str:
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


def digest_file(path: Path, *, full: bool, fresh: bool) -> str:
    """sha256 of an unpinned file (for the run record)."""
    name = path.resolve().name
    if fresh and not full and HEX64.fullmatch(name) and _content_addressed(path, name):
        _remember(path, name)
        return name
    return sha256_file(path) if full else _cached_sha256(path)


def hash_tree(path: Path) -> dict[str, str]:
    """sha256 of every .safetensors file under a folder, keyed by posix relative path."""
    files = sorted(p for p in path.rglob(f"*{WEIGHT_SUFFIX}") if p.is_file())
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
