"""A third backbone family, added with one folder (`third/`, next to this file) and one registry line, is found
by name everywhere a family is: weights.toml, `GenProp.load`, the chunk loop, the capabilities behind
--preserve, the tiny builders and training's refusal of a family without an objective. It renders a real clip."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from PIL import Image

import third
from clips import make_clip, pattern_frame
from genprop_cli.api import Clip, GenProp, OutputOptions, RunRequest, render
from genprop_cli.config import PropagationOptions
from genprop_cli.errors import OptionError
from genprop_cli.families import family_names, register_family, tiny_layouts, unregister_family
from genprop_cli.random_tiny import build_random_tiny
from genprop_cli.weights import sha256_file
from third.backbone import ThirdBackbone
from third.sampler import ThirdSampler

W, H = 96, 64


@pytest.fixture
def registered():
    register_family(third.FAMILY)  # the one registry line
    yield third.FAMILY
    unregister_family(third.FAMILY.name)


def variant_toml(name: str, family: str, backbone: Path, adapter: Path) -> str:
    """weights.toml with one variant whose backbone and adapter are the local folders built by the test."""
    files = "\n".join(
        f'"{p.relative_to(backbone).as_posix()}" = "{sha256_file(p)}"' for p in sorted(backbone.rglob("*.safetensors"))
    )
    configs = ", ".join(f'"{p.relative_to(backbone).as_posix()}"' for p in sorted(backbone.rglob("*.json")))
    return f"""schema_version = 1
default_variant = "{name}"

[variants.{name}]
description = "tiny random third-family backbone built by the test"
family = "{family}"
untrained = true

[variants.{name}.backbone]
source = "{backbone.as_posix()}"
configs = [{configs}]

[variants.{name}.backbone.files]
{files}

[variants.{name}.adapter]
source = "{adapter.as_posix()}"
sha256 = "{sha256_file(adapter)}"

[variants.{name}.limits]
max_pixels = 4096
multiple_of = 8
max_frames = 1000

[variants.{name}.defaults]
steps = 1
guidance = 1.0
chunk = 32
overlap = 8
dtype = "fp32"
"""


@pytest.fixture
def variant(registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    backbone, adapter = build_random_tiny(tmp_path / "tiny", family="third-tiny")
    registry = tmp_path / "weights.toml"
    registry.write_text(variant_toml("tiny-third", "third", backbone, adapter))
    monkeypatch.setenv("GENPROP_REGISTRY", str(registry))
    return "tiny-third"


def test_registering_the_folder_adds_the_family_and_its_tiny_layout(registered):
    assert family_names()[-1] == "third" and tiny_layouts()["third-tiny"] == "third"
    assert registered.sampler() is ThirdSampler and registered.backbone() is ThirdBackbone


def test_a_third_family_renders_a_clip_end_to_end(variant, tmp_path):
    model = GenProp.load(variant, device="cpu")
    assert type(model.pipeline) is ThirdSampler and type(model.pipeline.backbone) is ThirdBackbone
    assert model.pipeline.adapter.config.family == "third"  # the tiny builder wrote the family's own adapter
    video = make_clip(tmp_path / "clip.mp4", width=W, height=H, frames=40, audio=None)
    Image.fromarray(pattern_frame(0, W, H)[:, ::-1].copy()).save(tmp_path / "edited.png")
    request = RunRequest(video=video, first_frames=(tmp_path / "edited.png",), options=PropagationOptions(steps=1),
                         outputs=OutputOptions(output=tmp_path / "out.mp4"))  # fmt: skip
    result = render(model, request)
    assert result.frames == 40 and model.pipeline.sampled == 2  # chunk 32, overlap 8: two chunks
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (W, H)
        assert sum(1 for _ in container.decode(stream)) == 40
    # --preserve follows the third family's capabilities, not those of the SVD sampler it reuses
    with pytest.raises(OptionError, match="--preserve is not available for third variants"):
        next(model.propagate(Clip.open(video, tmp_path / "edited.png"), PropagationOptions(steps=1, preserve=True)))


def test_training_refuses_a_family_registered_without_an_objective(variant):
    from genprop_cli.training.trainer import check_trainable

    with pytest.raises(OptionError, match="'third' backbone; training is implemented for svd, wan"):
        check_trainable(variant)
