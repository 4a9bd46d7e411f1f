"""A throwaway third backbone family, added as docs/architecture.md says: this folder plus one registry line
(`register_family(FAMILY)`, in the test). It is the SVD U-Net under its own name, with its own backbone and
sampler classes, no text, no --preserve and no training objective; its tiny layout is SVD's builder."""

from genprop_cli.families import Capabilities, Family

FAMILY = Family(
    name="third",
    capabilities=Capabilities(),
    backbone_ref="third.backbone:ThirdBackbone",
    sampler_ref="third.sampler:ThirdSampler",
    tiny_refs={"third-tiny": "genprop_cli.families.svd.tiny:build_random_tiny_pipeline"},
)
