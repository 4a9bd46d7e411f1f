"""Weights registry: parsing, resolution from package/local/HF-cache sources, and sha256 checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hf_constants
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner

from genprop_cli import weights
from genprop_cli.cli import app
from genprop_cli.weights import integrity, locations
from hubcache import add_to_hf_cache
from genprop_cli.errors import (
    AdapterUnavailableError,
    ChecksumMismatchError,
    UnknownVariantError,
    WeightsError,
)

ROOT = Path(__file__).resolve().parents[1]
REPO = "tiny-org/tiny-svd"
ADAPTER_REPO = "tiny-org/tiny-genprop"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ADAPTER_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
CONFIGS = ("model_index.json", "unet/config.json", "vae/config.json")
WEIGHT_FILES = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors")

LIMITS_AND_DEFAULTS = """
[variants.{name}.limits]
max_pixels = 4096
multiple_of = 8
max_frames = 1000

[variants.{name}.defaults]
steps = 2
guidance = 1.0
chunk = 32
overlap = 8
dtype = "fp32"
"""


# ---------------------------------------------------------------------------------------------
# Helpers and fixtures
# ---------------------------------------------------------------------------------------------


def tensor_bytes(tmp: Path, value: float, n: int = 4) -> bytes:
    """Bytes of a tiny safetensors file."""
    path = tmp / f"t-{value}-{n}.safetensors"
    save_file({"w": torch.full((n,), value)}, str(path))
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pipeline_files(tmp: Path, seed: float = 1.0) -> dict[str, bytes]:
    """Contents of a tiny diffusers-layout folder: configs plus two weight files."""
    files = {rel: b'{"_class_name": "x"}' for rel in CONFIGS}
    for i, rel in enumerate(WEIGHT_FILES):
        files[rel] = tensor_bytes(tmp, seed + i)
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def blob_of(snapshot: Path, rel: str) -> Path:
    return (snapshot / rel).resolve()


def files_table(name: str, files: dict[str, bytes]) -> str:
    lines = [f'"{rel}" = "{sha(data)}"' for rel, data in files.items() if rel.endswith(".safetensors")]
    return f"[variants.{name}.backbone.files]\n" + "\n".join(lines) + "\n"


def configs_line() -> str:
    return "configs = [" + ", ".join(f'"{c}"' for c in CONFIGS) + "]\n"


def variant_toml(name: str, backbone: str, files: dict[str, bytes], adapter: str) -> str:
    """One variant table; `adapter` is the body of its [adapter] table."""
    return (
        f'[variants.{name}]\ndescription = "test"\nfamily = "svd"\n\n'
        f'[variants.{name}.backbone]\nsource = "{backbone}"\n{configs_line()}\n'
        f"{files_table(name, files)}\n"
        f"[variants.{name}.adapter]\n{adapter}\n"
        f"{LIMITS_AND_DEFAULTS.format(name=name)}\n"
    )


def registry_file(tmp: Path, *variants: str, default: str) -> Path:
    path = tmp / "weights.toml"
    path.write_text(f'schema_version = 1\ndefault_variant = "{default}"\n\n' + "\n".join(variants))
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own hash cache and HF cache per test, HF offline: no test may reach the network or $HOME."""
    monkeypatch.setenv("GENPROP_CACHE", str(tmp_path / "genprop-cache"))
    monkeypatch.delenv("GENPROP_REGISTRY", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hf_cache() -> Path:
    path = Path(hf_constants.HF_HUB_CACHE)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def hub_setup(tmp_path: Path, hf_cache: Path) -> tuple[weights.Registry, Path, dict[str, bytes], bytes]:
    """A registry whose backbone and adapter come from a pre-populated HF cache."""
    files = pipeline_files(tmp_path)
    adapter = tensor_bytes(tmp_path, 7.0)
    snapshot = add_to_hf_cache(hf_cache, REPO, COMMIT, files)
    add_to_hf_cache(hf_cache, ADAPTER_REPO, ADAPTER_COMMIT, {"adapters/tiny.safetensors": adapter})
    body = (
        f'source = "hf://{ADAPTER_REPO}@{ADAPTER_COMMIT}"\nfilename = "adapters/tiny.safetensors"\n'
        f'sha256 = "{sha(adapter)}"\n'
    )
    path = registry_file(tmp_path, variant_toml("hubby", f"hf://{REPO}@{COMMIT}", files, body), default="hubby")
    return weights.load_registry(path), snapshot, files, adapter


@pytest.fixture
def local_setup(tmp_path: Path) -> tuple[weights.Registry, Path, dict[str, bytes], bytes]:
    """A registry with a local backbone folder and adapter, given relative to the registry."""
    files = pipeline_files(tmp_path, seed=3.0)
    folder = write_tree(tmp_path / "models" / "backbone", files)
    adapter = tensor_bytes(tmp_path, 5.0)
    (tmp_path / "models" / "adapter.safetensors").write_bytes(adapter)
    body = f'source = "models/adapter.safetensors"\nsha256 = "{sha(adapter)}"\n'
    unpublished = 'published = false\nnote = "none exist yet"\n'
    path = registry_file(
        tmp_path,
        variant_toml("local", "models/backbone", files, body),
        variant_toml("bare", "models/backbone", files, unpublished),
        default="local",
    )
    return weights.load_registry(path), folder, files, adapter


# ---------------------------------------------------------------------------------------------
# The shipped registry
# ---------------------------------------------------------------------------------------------


def test_repo_registry_loads_and_is_pinned() -> None:
    reg = weights.load_registry(ROOT / "weights.toml")
    assert reg.default_variant in reg.variants
    for spec in reg.variants.values():
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in spec.backbone_files.values())
        if spec.backbone.kind == "hub":
            assert spec.backbone.revision is not None and len(spec.backbone.revision) == 40
    svd = reg.get("svd-xt")
    assert svd.backbone.location == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert svd.backbone_file_variant == "fp16"
    assert set(svd.backbone_files) == {
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "image_encoder/model.fp16.safetensors",
    }
    assert svd.limits.max_pixels == 1024 * 576 and svd.limits.multiple_of == 64
    assert (svd.defaults.steps, svd.defaults.guidance, svd.defaults.dtype) == (25, 20.0, "fp16")
    assert (svd.defaults.preserve, svd.defaults.preserve_margin) == (False, 1)
    assert svd.defaults.preserve_thresholds == {"edit": 0.5, "remove": 0.5, "insert": 0.5, "track": 0.5}


def test_preserve_defaults_are_read_from_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    keys = "chunk = 32\npreserve = true\npreserve_margin = 0\npreserve_threshold = 0.2"
    path.write_text(good_toml(tmp_path).replace("chunk = 32", keys))
    defaults = weights.load_registry(path).get("v").defaults
    assert (defaults.preserve, defaults.preserve_margin) == (True, 0)
    assert [defaults.preserve_threshold(task) for task in ("edit", "remove", "insert", "track")] == [0.2] * 4


def test_a_preserve_threshold_table_gives_each_task_its_own(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    table = "preserve_threshold = { edit = 0.5, remove = 0.2, insert = 0.6, track = 0.3 }"
    path.write_text(good_toml(tmp_path).replace("chunk = 32", f"chunk = 32\n{table}"))
    defaults = weights.load_registry(path).get("v").defaults
    assert defaults.preserve_thresholds == {"edit": 0.5, "remove": 0.2, "insert": 0.6, "track": 0.3}


def test_svd_xt_adapter_is_unpublished_and_refused_before_any_download() -> None:
    reg = weights.load_registry(ROOT / "weights.toml")
    status = weights.variant_status(reg.get("svd-xt"))
    assert status["adapter"] == "unpublished" and status["backbone"] == "missing"
    with pytest.raises(AdapterUnavailableError) as info:
        weights.resolve_variant("svd-xt", registry=reg)
    message = str(info.value)
    assert "genprop train" in message and "--adapter" in message and "\n" not in message


def test_registry_path_prefers_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = Path(weights.__file__).parents[1] / "weights.toml"  # genprop_cli/weights.toml in a wheel
    assert weights.registry_path() == (packaged if packaged.is_file() else ROOT / "weights.toml")
    monkeypatch.setenv("GENPROP_REGISTRY", str(tmp_path / "mine.toml"))
    assert weights.registry_path() == tmp_path / "mine.toml"


def test_hash_command_prints_registry_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = pipeline_files(tmp_path)
    folder = write_tree(tmp_path / "bb", files)
    assert weights.main(["hash", str(folder)]) == 0
    out = capsys.readouterr().out
    for rel in WEIGHT_FILES:
        assert f'"{rel}" = "{sha(files[rel])}"' in out


# ---------------------------------------------------------------------------------------------
# Hugging Face cache (offline)
# ---------------------------------------------------------------------------------------------


def test_hub_variant_resolves_from_cache_offline(hub_setup, monkeypatch: pytest.MonkeyPatch) -> None:
    reg, snapshot, files, adapter = hub_setup
    resolved = weights.resolve_variant(None, registry=reg)
    assert resolved.backbone_dir == snapshot
    assert (resolved.backbone_dir / "model_index.json").is_file()
    assert resolved.adapter_file is not None and resolved.adapter_file.read_bytes() == adapter
    assert resolved.adapter_sha256 == sha(adapter)
    assert weights.variant_status(reg.get("hubby"))["backbone"] == "present"
    assert weights.variant_status(reg.get("hubby"))["adapter"] == "present"
    # Hashed once; the next run only stats the files.
    monkeypatch.setattr(integrity, "sha256_file", lambda p: pytest.fail(f"re-hashed {p}"))
    assert weights.resolve_variant("hubby", registry=reg) == resolved


def test_hub_offline_follows_hf_constant(hub_setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg, *_ = hub_setup
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError, match="genprop models download hubby"):
        weights.resolve_variant("hubby", registry=reg)  # offline=None -> HF_HUB_OFFLINE (True here)


def test_corrupted_blob_is_a_checksum_mismatch(hub_setup, tmp_path: Path) -> None:
    reg, snapshot, files, _ = hub_setup
    rel = WEIGHT_FILES[0]
    blob_of(snapshot, rel).write_bytes(tensor_bytes(tmp_path, 9.0, n=6))
    with pytest.raises(ChecksumMismatchError) as info:
        weights.resolve_variant("hubby", registry=reg)
    message = str(info.value)
    assert rel in message and sha(files[rel]) in message and "download" in message and "\n" not in message


def test_blob_changed_after_verification_is_caught(hub_setup, tmp_path: Path) -> None:
    reg, snapshot, files, _ = hub_setup
    weights.resolve_variant("hubby", registry=reg)
    rel = WEIGHT_FILES[1]
    bad = tensor_bytes(tmp_path, 42.0)
    assert len(bad) == len(files[rel])
    blob_of(snapshot, rel).write_bytes(bad)  # same size, new mtime: the hash cache must not vouch for it
    with pytest.raises(ChecksumMismatchError, match=rel):
        weights.resolve_variant("hubby", registry=reg)


def test_full_hash_ignores_the_hash_cache(hub_setup, tmp_path: Path) -> None:
    reg, snapshot, files, _ = hub_setup
    weights.resolve_variant("hubby", registry=reg)
    blob = blob_of(snapshot, WEIGHT_FILES[1])
    before = blob.stat()
    blob.write_bytes(tensor_bytes(tmp_path, 42.0))
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as when verified
    weights.resolve_variant("hubby", registry=reg)
    with pytest.raises(ChecksumMismatchError, match=WEIGHT_FILES[1]):
        weights.resolve_variant("hubby", registry=reg, full_hash=True)


def fake_hub(monkeypatch: pytest.MonkeyPatch, cache: Path, repos: dict[tuple[str, str], dict[str, bytes]]) -> list[str]:
    """Stand-ins for huggingface_hub's downloaders that write into the cache as a download would."""
    calls: list[str] = []

    def snapshot_download(repo_id: str, *, revision: str, allow_patterns: list[str], **_: object) -> str:
        calls.append(f"snapshot {repo_id}")
        wanted = {k: v for k, v in repos[(repo_id, revision)].items() if k in allow_patterns}
        return str(add_to_hf_cache(cache, repo_id, revision, wanted))

    def hf_hub_download(repo_id: str, filename: str, *, revision: str, **_: object) -> str:
        calls.append(f"file {repo_id}/{filename}")
        data = repos[(repo_id, revision)][filename]
        return str(add_to_hf_cache(cache, repo_id, revision, {filename: data}) / filename)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def test_fresh_download_is_trusted_by_blob_name(
    tmp_path: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = pipeline_files(tmp_path)
    adapter = tensor_bytes(tmp_path, 7.0)
    hub = {(REPO, COMMIT): files, (ADAPTER_REPO, ADAPTER_COMMIT): {"a.safetensors": adapter}}
    calls = fake_hub(monkeypatch, hf_cache, hub)
    body = f'source = "hf://{ADAPTER_REPO}@{ADAPTER_COMMIT}/a.safetensors"\nsha256 = "{sha(adapter)}"\n'
    toml = variant_toml("v", f"hf://{REPO}@{COMMIT}", files, body)
    reg = weights.load_registry(registry_file(tmp_path, toml, default="v"))
    real_hash = weights.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: pytest.fail(f"hashed {p}"))
    resolved = weights.download_variant("v", registry=reg)
    assert calls == [f"snapshot {REPO}", f"file {ADAPTER_REPO}/a.safetensors"]
    assert resolved.adapter_sha256 == sha(adapter)
    weights.resolve_variant("v", registry=reg, offline=True)  # cached now: no download, no hashing
    assert len(calls) == 2
    monkeypatch.setattr(integrity, "sha256_file", real_hash)
    blob_of(resolved.backbone_dir, WEIGHT_FILES[0]).write_bytes(tensor_bytes(tmp_path, 9.0))
    with pytest.raises(ChecksumMismatchError, match=WEIGHT_FILES[0]):
        weights.resolve_variant("v", registry=reg, offline=True)


def test_gated_repo_says_accept_licence_and_log_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    httpx = pytest.importorskip("httpx2")
    from huggingface_hub.errors import GatedRepoError

    def gated(*_: object, **__: object) -> str:
        response = httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co"))
        raise GatedRepoError("Access to model is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    files = pipeline_files(tmp_path)
    toml = variant_toml("v", f"hf://{REPO}@{COMMIT}", files, 'published = false\nnote = "n"\n')
    reg = weights.load_registry(registry_file(tmp_path, toml, default="v"))
    with pytest.raises(WeightsError) as info:
        weights.download_variant("v", registry=reg)
    assert f"https://huggingface.co/{REPO}" in str(info.value) and "hf auth login" in str(info.value)


def test_hub_serving_other_bytes_is_caught(tmp_path: Path, hf_cache: Path) -> None:
    files = pipeline_files(tmp_path)
    pinned = dict(files, **{WEIGHT_FILES[0]: tensor_bytes(tmp_path, 11.0)})
    add_to_hf_cache(hf_cache, REPO, COMMIT, files)
    toml = variant_toml("v", f"hf://{REPO}@{COMMIT}", pinned, 'published = false\nnote = "n"\n')
    reg = weights.load_registry(registry_file(tmp_path, toml, default="v"))
    with pytest.raises(ChecksumMismatchError, match=WEIGHT_FILES[0]):
        weights.resolve_variant("v", registry=reg, require_adapter=False)


def test_missing_file_offline_says_how_to_download(hub_setup) -> None:
    reg, snapshot, *_ = hub_setup
    (snapshot / WEIGHT_FILES[1]).unlink()
    with pytest.raises(WeightsError) as info:
        weights.resolve_variant("hubby", registry=reg, offline=True)
    assert not isinstance(info.value, ChecksumMismatchError)
    assert "genprop models download hubby" in str(info.value) and "HF_HOME" in str(info.value)
    assert weights.variant_status(reg.get("hubby"))["backbone"] == "missing"


def test_missing_adapter_offline_says_how_to_download(hub_setup, hf_cache: Path) -> None:
    reg, *_ = hub_setup
    storage = hf_cache / f"models--{ADAPTER_REPO.replace('/', '--')}"
    (storage / "snapshots" / ADAPTER_COMMIT / "adapters" / "tiny.safetensors").unlink()
    with pytest.raises(WeightsError, match="genprop models download hubby"):
        weights.resolve_variant("hubby", registry=reg, offline=True)
    assert weights.variant_status(reg.get("hubby"))["adapter"] == "missing"


def test_download_variant_uses_cache_and_skips_unpublished_adapter(tmp_path: Path, hf_cache: Path) -> None:
    files = pipeline_files(tmp_path)
    snapshot = add_to_hf_cache(hf_cache, REPO, COMMIT, files)
    toml = variant_toml("v", f"hf://{REPO}@{COMMIT}", files, 'published = false\nnote = "n"\n')
    reg = weights.load_registry(registry_file(tmp_path, toml, default="v"))
    resolved = weights.download_variant("v", registry=reg)
    assert resolved.backbone_dir == snapshot and resolved.adapter_file is None


def test_unpinned_hub_backbone_is_refused(tmp_path: Path) -> None:
    files = pipeline_files(tmp_path)
    toml = variant_toml("v", f"hf://{REPO}", files, 'published = false\nnote = "n"\n')
    reg = weights.load_registry(registry_file(tmp_path, toml, default="v"))
    assert weights.variant_status(reg.get("v"))["backbone"] == "unpinned"
    with pytest.raises(WeightsError, match="variant 'v' backbone revision is not pinned"):
        weights.resolve_variant("v", registry=reg, require_adapter=False)


def test_hub_adapter_override(hub_setup, tmp_path: Path, hf_cache: Path) -> None:
    reg, *_ = hub_setup
    other = tensor_bytes(tmp_path, 13.0)
    add_to_hf_cache(hf_cache, "me/my-adapter", ADAPTER_COMMIT, {"a.safetensors": other})
    override = f"hf://me/my-adapter@{ADAPTER_COMMIT}/a.safetensors"
    resolved = weights.resolve_variant("hubby", registry=reg, adapter=override)
    assert resolved.adapter_file is not None and resolved.adapter_file.read_bytes() == other
    assert resolved.adapter_sha256 == sha(other)
    with pytest.raises(WeightsError, match="40-hex"):
        weights.resolve_variant("hubby", registry=reg, adapter="hf://me/my-adapter@main/a.safetensors")
    with pytest.raises(WeightsError, match="only safetensors"):
        weights.resolve_variant("hubby", registry=reg, adapter=f"hf://me/my-adapter@{ADAPTER_COMMIT}/a.bin")


# ---------------------------------------------------------------------------------------------
# Local and package sources
# ---------------------------------------------------------------------------------------------


def test_local_variant_resolves(local_setup) -> None:
    reg, folder, _, adapter = local_setup
    resolved = weights.resolve_variant("local", registry=reg)
    assert resolved.backbone_dir == folder
    assert resolved.adapter_file is not None and resolved.adapter_file.read_bytes() == adapter
    assert resolved.adapter_sha256 == sha(adapter)


def test_local_checksum_mismatch(local_setup, tmp_path: Path) -> None:
    reg, folder, *_ = local_setup
    (folder / WEIGHT_FILES[0]).write_bytes(tensor_bytes(tmp_path, 99.0))
    with pytest.raises(ChecksumMismatchError, match="diffusion_pytorch_model.safetensors: sha256"):
        weights.resolve_variant("local", registry=reg)


def test_hashes_are_cached_between_runs(local_setup, monkeypatch: pytest.MonkeyPatch) -> None:
    reg, *_ = local_setup
    calls: list[Path] = []
    real = weights.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(p) or real(p))
    weights.resolve_variant("local", registry=reg)
    first = len(calls)
    weights.resolve_variant("local", registry=reg)
    assert first == len(WEIGHT_FILES) + 1 and len(calls) == first


def test_package_variant_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assets = tmp_path / "assets"
    files = pipeline_files(tmp_path)
    write_tree(assets / "tiny" / "backbone", files)
    adapter = tensor_bytes(tmp_path, 2.0)
    (assets / "tiny" / "adapter.safetensors").write_bytes(adapter)
    monkeypatch.setattr(locations, "assets_dir", lambda: assets)
    body = f'source = "package:tiny/adapter.safetensors"\nsha256 = "{sha(adapter)}"\n'
    toml = variant_toml("p", "package:tiny/backbone", files, body)
    reg = weights.load_registry(registry_file(tmp_path, toml, default="p"))
    resolved = weights.resolve_variant("p", registry=reg)
    assert resolved.backbone_dir == assets / "tiny" / "backbone"
    assert resolved.adapter_sha256 == sha(adapter)
    assert weights.variant_status(reg.get("p")) | {"description": ""} == {
        "name": "p", "description": "", "family": "svd", "backbone": "present", "adapter": "present"
    }
    (assets / "tiny" / "backbone" / "vae" / "config.json").unlink()
    with pytest.raises(WeightsError, match="reinstall genprop-cli"):
        weights.resolve_variant("p", registry=reg)


def test_missing_local_backbone_folder(tmp_path: Path) -> None:
    files = pipeline_files(tmp_path)
    toml = variant_toml("v", str(tmp_path / "nowhere"), files, 'published = false\nnote = "n"\n')
    reg = weights.load_registry(registry_file(tmp_path, toml, default="v"))
    assert weights.variant_status(reg.get("v"))["backbone"] == "missing"
    with pytest.raises(WeightsError, match="lacks model_index.json"):
        weights.resolve_variant("v", registry=reg, require_adapter=False)


# ---------------------------------------------------------------------------------------------
# --adapter overrides
# ---------------------------------------------------------------------------------------------


def test_adapter_override_by_local_path(local_setup, tmp_path: Path) -> None:
    reg, *_ = local_setup
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(tensor_bytes(tmp_path, 8.0))
    for name in ("local", "bare"):  # an override also makes an unpublished variant runnable
        resolved = weights.resolve_variant(name, registry=reg, adapter=str(mine))
        assert resolved.adapter_file == mine.resolve() and resolved.adapter_sha256 == sha(mine.read_bytes())


def test_adapter_override_refuses_pickles(local_setup, tmp_path: Path) -> None:
    reg, *_ = local_setup
    for suffix in (".bin", ".pt", ".ckpt"):
        pickle = tmp_path / f"adapter{suffix}"
        pickle.write_bytes(b"not safe")
        with pytest.raises(WeightsError, match="only safetensors are loaded"):
            weights.resolve_variant("local", registry=reg, adapter=str(pickle))


def test_adapter_override_missing_file(local_setup, tmp_path: Path) -> None:
    reg, *_ = local_setup
    with pytest.raises(WeightsError, match="no such file"):
        weights.resolve_variant("local", registry=reg, adapter=str(tmp_path / "absent.safetensors"))


def test_adapter_override_must_be_safetensors_inside(local_setup, tmp_path: Path) -> None:
    reg, *_ = local_setup
    fake = tmp_path / "renamed.safetensors"
    fake.write_bytes(b"\x80\x04 pickled bytes")
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        weights.resolve_variant("local", registry=reg, adapter=str(fake))


def test_unpublished_variant_without_override(local_setup) -> None:
    reg, folder, *_ = local_setup
    with pytest.raises(AdapterUnavailableError, match="variant 'bare' has no published GenProp adapter"):
        weights.resolve_variant("bare", registry=reg)
    resolved = weights.resolve_variant("bare", registry=reg, require_adapter=False)
    assert resolved.backbone_dir == folder and resolved.adapter_file is None
    assert weights.variant_status(reg.get("bare"))["adapter"] == "unpublished"


def test_unknown_variant_lists_available(local_setup) -> None:
    reg, *_ = local_setup
    with pytest.raises(UnknownVariantError, match=r"unknown variant 'nope'; available: bare, local"):
        weights.resolve_variant("nope", registry=reg)


# ---------------------------------------------------------------------------------------------
# Malformed registries
# ---------------------------------------------------------------------------------------------


ADAPTER_SHA = f'sha256 = "{"ab" * 32}"\n'
ADAPTER_BODY = f'source = "hf://{ADAPTER_REPO}@{ADAPTER_COMMIT}/a.safetensors"\n' + ADAPTER_SHA


def good_toml(tmp_path: Path) -> str:
    files = pipeline_files(tmp_path)
    toml = variant_toml("v", f"hf://{REPO}@{COMMIT}", files, ADAPTER_BODY)
    return 'schema_version = 1\ndefault_variant = "v"\n\n' + toml


FILES_HEADER = "[variants.v.backbone.files]\n"

BREAKAGES = [
    ("bad hex revision", lambda t: t.replace(f"{REPO}@{COMMIT}", f"{REPO}@main"), "variants.v.backbone.source"),
    ("short revision", lambda t: t.replace(f"@{COMMIT}", f"@{COMMIT[:12]}"), "variants.v.backbone.source"),
    ("adapter unpinned", lambda t: t.replace(f"@{ADAPTER_COMMIT}/a", "/a"), "variants.v.adapter.source"),
    ("bad sha256", lambda t: t.replace("ab" * 32, "xyz"), "variants.v.adapter.sha256"),
    ("short file sha", lambda t: t.replace(FILES_HEADER, FILES_HEADER + '"x/y.safetensors" = "12"\n'),
     'variants.v.backbone.files."x/y.safetensors"'),
    ("pickle weight file", lambda t: t.replace(FILES_HEADER, FILES_HEADER + f'"x/y.bin" = "{"0" * 64}"\n'),
     'variants.v.backbone.files."x/y.bin"'),
    ("missing key", lambda t: t.replace("max_pixels = 4096\n", ""), "variants.v.limits.max_pixels"),
    ("missing table", lambda t: t.replace("[variants.v.defaults]", "[variants.v.other]"), "variants.v.other"),
    ("unknown key", lambda t: t.replace("steps = 2", "stpes = 2"), "variants.v.defaults.stpes"),
    ("wrong type", lambda t: t.replace("steps = 2", 'steps = "2"'), "variants.v.defaults.steps"),
    ("bad chunk", lambda t: t.replace("chunk = 32", "chunk = 48"), "variants.v.defaults.chunk"),
    ("preserve not a boolean", lambda t: t.replace("chunk = 32", "chunk = 32\npreserve = 1"),
     "variants.v.defaults.preserve"),
    ("negative preserve margin", lambda t: t.replace("chunk = 32", "chunk = 32\npreserve_margin = -1"),
     "variants.v.defaults.preserve_margin"),
    ("preserve threshold of 1", lambda t: t.replace("chunk = 32", "chunk = 32\npreserve_threshold = 1.0"),
     "variants.v.defaults.preserve_threshold"),
    ("a task's preserve threshold of 0", lambda t: t.replace("chunk = 32", "chunk = 32\npreserve_threshold = "
     "{ edit = 0.5, remove = 0.0, insert = 0.5, track = 0.5 }"), "variants.v.defaults.preserve_threshold.remove"),
    ("a task without a preserve threshold", lambda t: t.replace("chunk = 32", "chunk = 32\npreserve_threshold = "
     "{ edit = 0.5, remove = 0.2, insert = 0.5 }"), "variants.v.defaults.preserve_threshold.track"),
    ("an unknown task's preserve threshold", lambda t: t.replace("chunk = 32", "chunk = 32\npreserve_threshold = "
     "{ edit = 0.5, remove = 0.2, insert = 0.5, track = 0.5, erase = 0.1 }"),
     "variants.v.defaults.preserve_threshold.erase"),
    ("preserve threshold not a number", lambda t: t.replace("chunk = 32", 'chunk = 32\npreserve_threshold = "low"'),
     "variants.v.defaults.preserve_threshold"),
    ("unknown top-level key", lambda t: t + "\n[tool]\nx = 1\n", "tool"),
    ("schema version", lambda t: t.replace("schema_version = 1", "schema_version = 2"), "schema_version"),
    ("no schema version", lambda t: t.replace("schema_version = 1\n", ""), "schema_version"),
    ("default missing", lambda t: t.replace('default_variant = "v"', 'default_variant = "w"'), "default_variant"),
    ("unpublished without note", lambda t: t.replace(ADAPTER_BODY, "published = false\n"), "variants.v.adapter.note"),
    ("unpublished with a file", lambda t: t.replace(ADAPTER_BODY, 'published = false\nnote = "n"\n' + ADAPTER_SHA),
     "variants.v.adapter.sha256"),
    ("path escape", lambda t: t.replace("/a.safetensors", "/../a.safetensors"), "variants.v.adapter.source"),
]


@pytest.mark.parametrize("breakage, key", [(b[1], b[2]) for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_malformed_registry_names_the_key(tmp_path: Path, breakage, key: str) -> None:
    text = good_toml(tmp_path)
    good, path = tmp_path / "good.toml", tmp_path / "broken.toml"
    good.write_text(text)
    weights.load_registry(good)
    assert breakage(text) != text
    path.write_text(breakage(text))
    with pytest.raises(WeightsError) as info:
        weights.load_registry(path)
    message = str(info.value)
    assert str(path) in message and key in message and "\n" not in message


def test_registry_not_toml_or_absent(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("schema_version = [\n")
    with pytest.raises(WeightsError, match="not valid TOML"):
        weights.load_registry(bad)
    with pytest.raises(WeightsError, match="does not exist"):
        weights.load_registry(tmp_path / "absent.toml")


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
_segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)
_rel = st.lists(_segment, min_size=1, max_size=3)


@given(org=_name, repo=_name, rev=st.from_regex(r"[0-9a-f]{40}", fullmatch=True), parts=_rel)
def test_hub_source_round_trip(org: str, repo: str, rev: str, parts: list[str]) -> None:
    path = "/".join(parts) + ".safetensors"
    source = weights.parse_adapter_override(f"hf://{org}/{repo}@{rev}/{path}")
    assert (source.kind, source.location, source.revision, source.path) == ("hub", f"{org}/{repo}", rev, path)


def test_huggingface_hub_reads_patched_constants() -> None:
    """The production code passes no cache_dir: huggingface_hub must read the constants at call time."""
    assert hf_constants.HF_HUB_OFFLINE is True
    assert huggingface_hub.try_to_load_from_cache(REPO, "model_index.json", revision=COMMIT) is None


def test_a_family_the_registry_does_not_know_is_a_weights_error_naming_the_key(tmp_path):
    files = {"unet/diffusion_pytorch_model.safetensors": b"x"}
    text = variant_toml("typo", "package:random-tiny/backbone", files, "published = false").replace(
        'family = "svd"', 'family = "sdv"'
    )
    path = registry_file(tmp_path, text, default="typo")
    with pytest.raises(WeightsError, match=r"variants\.typo\.family 'sdv' is not a backbone family \(known: svd, wan"):
        weights.load_registry(path)
    result = CliRunner().invoke(app, ["models", "list"], env={"GENPROP_REGISTRY": str(path)})
    assert result.exit_code == 5 and "is not a backbone family" in result.stderr
