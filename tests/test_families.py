"""The family registry (`genprop_cli.families`): names, lazy parts, capabilities, the chunk protocol."""

from __future__ import annotations

import inspect
import subprocess
import sys
from types import SimpleNamespace

import pytest

from genprop_cli.errors import OptionError, WeightsError
from genprop_cli.families import (
    Capabilities,
    Family,
    families_with,
    family_names,
    get_family,
    register_family,
    tiny_layouts,
    unregister_family,
)


def test_importing_the_registry_is_cheap():
    """weights.toml's `family =` is checked against it: no torch, no diffusers until a part is asked for."""
    code = (
        "import sys, genprop_cli.families as f; f.family_names(); f.tiny_layouts(); f.get_family('wan').capabilities; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_family_is_a_weights_error_naming_the_known_ones():
    with pytest.raises(WeightsError, match=r"unknown backbone family 'nope'; known: svd, wan"):
        get_family("nope")


def test_the_builtin_families_and_their_parts():
    from genprop_cli.families.base import Backbone

    assert family_names()[:2] == ("svd", "wan")
    assert {k: v for k, v in tiny_layouts().items() if v in ("svd", "wan")} == {"svd": "svd", "wan": "wan", "wan-ti2v": "wan"}
    for name in ("svd", "wan"):
        family = get_family(name)
        sampler, backbone = family.sampler(), family.backbone()
        assert sampler.family == backbone.family == name
        assert issubclass(backbone, Backbone) and family.trainable and callable(family.objective())
        assert sampler.capabilities == family.capabilities  # declared twice: the entry must not import the sampler
    assert get_family("svd").capabilities == Capabilities(preserve=True)
    assert get_family("wan").capabilities == Capabilities(vae_tiling=True, attention_backends=True, text=True)
    assert families_with("vae_tiling")[:1] == families_with("attention_backends")[:1] == ("wan",)
    with pytest.raises(ValueError, match="no capability"):
        families_with("teleport")


@pytest.mark.parametrize("name", ["svd", "wan"])
def test_samplers_accept_every_argument_of_the_chunk_protocol(name):
    from genprop_cli.families.base import ChunkSampler

    sampler = get_family(name).sampler()
    for member, declared in vars(ChunkSampler).items():
        if member.startswith("_") or not (inspect.isfunction(declared) or isinstance(declared, (property, classmethod))):
            continue
        assert hasattr(sampler, member), member
        if isinstance(declared, property):
            assert isinstance(inspect.getattr_static(sampler, member), property), member
            continue
        wanted = set(inspect.signature(getattr(ChunkSampler, member)).parameters) - {"self", "cls"}
        given = inspect.signature(getattr(sampler, member)).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in given.values()):
            assert wanted <= set(given), (member, wanted - set(given))


def test_a_sampler_instance_is_a_chunk_sampler():
    from genprop_cli.families.base import ChunkSampler
    from genprop_cli.families.svd.sampler import GenPropSVDPipeline
    from genprop_cli.families.svd.tiny import build_random_tiny_pipeline

    assert isinstance(GenPropSVDPipeline(build_random_tiny_pipeline(seed=0)), ChunkSampler)


@pytest.fixture
def untrainable():
    family = register_family(Family("untrainable", Capabilities(), "x.y:Backbone", "x.y:Sampler"))
    yield family
    unregister_family(family.name)


def test_names_and_layouts_are_registered_once(untrainable):
    with pytest.raises(ValueError, match="already registered"):
        register_family(untrainable)
    with pytest.raises(ValueError, match="tiny layouts wan-ti2v belong to another family"):
        register_family(Family("other", Capabilities(), "x.y:B", "x.y:S", tiny_refs={"wan-ti2v": "x.y:build"}))
    with pytest.raises(ValueError, match="not 'package.module:attribute'"):
        Family("bad", Capabilities(), "x.y.Backbone", "x.y:S")
    assert "other" not in family_names()


def test_a_family_without_an_objective_cannot_be_trained(untrainable):
    from genprop_cli.training.objective import objective_for

    assert not untrainable.trainable and untrainable.objective() is None
    with pytest.raises(OptionError, match="no training objective for backbone family 'untrainable'"):
        objective_for(SimpleNamespace(family="untrainable"))


def test_parts_may_be_given_by_callables():
    family = Family("inline", Capabilities(), lambda: int, lambda: str, tiny_refs={"inline": lambda: len})
    assert family.backbone() is int and family.sampler() is str and family.tiny("inline") is len
