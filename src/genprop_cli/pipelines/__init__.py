"""Per-family GenProp samplers: each turns (original latents, conditioning frame, task) into one chunk."""

from __future__ import annotations


def pipeline_class(family: str):
    """The sampler class of a backbone family (imported lazily: diffusers is slow to import)."""
    if family == "svd":
        from genprop_cli.pipelines.svd import GenPropSVDPipeline

        return GenPropSVDPipeline
    raise ValueError(f"no GenProp pipeline for backbone family {family!r}")
