"""Hugging Face Hub access: files of a pinned commit from the HF cache, downloaded first unless offline,
with huggingface_hub's errors turned into one-line WeightsErrors that say what to do."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Callable, TypeVar

from genprop_cli.errors import WeightsError
from genprop_cli.weights.schema import Source

_T = TypeVar("_T")


def hub_offline(offline: bool | None) -> bool:
    """offline=None follows huggingface_hub's HF_HUB_OFFLINE."""
    if offline is not None:
        return offline
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_hub_file(repo: str, revision: str, filename: str) -> Path | None:
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


def hub_snapshot(
    source: Source, files: tuple[str, ...], offline: bool, variant: str | None
) -> tuple[Path, frozenset[str]]:
    """Snapshot folder holding `files` at the pinned commit, and which of them were just downloaded."""
    assert source.revision is not None
    repo, revision = source.location, source.revision
    what = f"{repo}@{revision[:12]}"
    missing = [f for f in files if cached_hub_file(repo, revision, f) is None]
    if missing and offline:
        raise WeightsError(_missing_hint(f"{what} file {missing[0]}", variant))
    if missing:
        from huggingface_hub import constants, snapshot_download

        fetch = lambda: snapshot_download(repo, revision=revision, allow_patterns=list(files))  # noqa: E731
        _hub_call(fetch, repo, revision, what, variant)
        still = [f for f in missing if cached_hub_file(repo, revision, f) is None]
        if still and constants.HF_HUB_OFFLINE:
            raise WeightsError(_missing_hint(f"{what} file {still[0]}", variant))
        if still:
            raise WeightsError(f"{still[0]} is not in {repo} at commit {revision}; fix the weights registry")
    anchor = cached_hub_file(repo, revision, files[0])
    assert anchor is not None
    return anchor.parents[len(PurePosixPath(files[0]).parts) - 1], frozenset(missing)


def hub_file(source: Source, offline: bool, variant: str | None) -> tuple[Path, bool]:
    """One pinned file from the HF cache (downloaded first unless offline), and whether it was just fetched."""
    assert source.revision is not None and source.path is not None
    repo, revision, rel = source.location, source.revision, source.path
    cached = cached_hub_file(repo, revision, rel)
    if cached is not None:
        return cached, False
    if offline:
        raise WeightsError(_missing_hint(f"{repo}@{revision[:12]} file {rel}", variant))
    from huggingface_hub import hf_hub_download

    fetch = lambda: hf_hub_download(repo, rel, revision=revision)  # noqa: E731
    return Path(_hub_call(fetch, repo, revision, rel, variant)), True
