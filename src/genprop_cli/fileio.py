"""Writing files and folders so that no reader ever sees half of one, hashing files, and reading JSON input.

Every writer in the package goes through here: a temp name beside the target (same folder, so the
final os.replace is atomic), renamed into place only once complete and removed on any failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genprop_cli.errors import InputError

PARTIAL = ".partial-"
HASH_BLOCK = 1 << 20


def partial_path(target: Path, *, unique: bool = True) -> Path:
    """The hidden temp name of `target`: `.NAME.partial-PID-TOKEN.SUFFIX` (the suffix kept, so that writers
    that infer a format from it still can); with `unique=False`, `.NAME.partial` (the same name in every
    process, for a folder several processes fill together)."""
    target = Path(target)
    if not unique:
        return target.with_name(f".{target.name}.partial")
    return target.with_name(f".{target.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def partial_owner(temp: Path, target: Path) -> int | None:
    """The process id in a unique temp name of `target`, or None if `temp` is not one."""
    prefix = f".{Path(target).name}{PARTIAL}"
    if not temp.name.startswith(prefix):
        return None
    pid = temp.name[len(prefix) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def fsync_path(path: Path) -> None:
    """Flushes a file, or a folder's entries (so that a rename inside it survives power loss), to disk.
    A folder is best effort: not every OS can open or fsync one."""
    folder = Path(path).is_dir()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yields a temp path to write; it replaces `path` when the block succeeds and is deleted when it fails.
    `durable`: fsync the file and its folder, so that after a power loss `path` is whole or absent."""
    path = Path(path)
    temp = partial_path(path)
    try:
        yield temp
        if durable:
            fsync_path(temp)
        os.replace(temp, path)
        if durable:
            fsync_path(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = False) -> None:
    with atomic_file(path, durable=durable) as temp:
        temp.write_bytes(data)


def write_text_atomic(path: Path, text: str, *, durable: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


@contextmanager
def atomic_folder(path: Path, *, unique: bool = True) -> Iterator[Path]:
    """Yields an empty temp folder to fill; it replaces `path` (and whatever was there) when the block
    succeeds and is removed when it fails. A folder exists under its real name only once complete."""
    path = Path(path)
    temp = partial_path(path, unique=unique)
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        yield temp
        replace_folder(temp, path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def replace_folder(temp: Path, path: Path) -> None:
    """Moves the finished folder `temp` onto `path`, removing an older `path` first."""
    if path.exists():
        shutil.rmtree(path)
    temp.replace(path)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, streamed in HASH_BLOCK (1 MiB) blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path, what: str = "") -> Any:
    """A JSON file's content, or an InputError naming the file, as `what` (e.g. "annotation file ") plus its path."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InputError(f"{what}{path} does not exist") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read {what}{path}: {error}") from error
