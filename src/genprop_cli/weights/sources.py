"""Source strings: `package:<path>`, `hf://org/name@<commit>[/<file>]` or a local path, and --adapter overrides."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from genprop_cli.errors import WeightsError
from genprop_cli.weights.schema import HEX40, WEIGHT_SUFFIX, Source

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_HF_PREFIX = "hf://"
_PACKAGE_PREFIX = "package:"


def parse_source(raw: str, *, base_dir: Path | None = None) -> Source:
    """Parse a source string; relative local paths are taken from base_dir (the registry's folder)."""
    if raw.startswith(_HF_PREFIX):
        return _parse_hub(raw)
    if raw.startswith(_PACKAGE_PREFIX):
        rel = raw[len(_PACKAGE_PREFIX) :]
        check_relative(rel, raw)
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
    if at and not HEX40.fullmatch(revision):
        raise ValueError(f"revision {revision!r} in {raw!r} is not a 40-hex commit (branches and tags move)")
    if path:
        check_relative(path, raw)
    return Source("hub", repo, revision.lower() or None, raw, path or None)


def check_relative(rel: str, raw: str) -> None:
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
    if not name.endswith(WEIGHT_SUFFIX):
        suffix = PurePosixPath(name).suffix or "no extension"
        raise WeightsError(
            f"{what}: only safetensors are loaded (got {suffix}); "
            "convert it with safetensors.torch.save_file and pass the .safetensors file"
        )
