"""Stable Video Diffusion (`UNetSpatioTemporalConditionModel`): GenProp's first family.

`backbone.py` wires the adapter into the U-Net, `sampler.py` samples one chunk (EDM, Euler, v-prediction),
`objective.py` trains the adapter with SVD's own EDM objective, `tiny.py` builds the random-tiny U-Net.
"""

from genprop_cli.families import Capabilities, Family

FAMILY = Family(
    name="svd",
    capabilities=Capabilities(preserve=True),
    backbone_ref="genprop_cli.families.svd.backbone:SVDBackbone",
    sampler_ref="genprop_cli.families.svd.sampler:GenPropSVDPipeline",
    objective_ref="genprop_cli.families.svd.objective:EDMObjective",
    tiny_refs={"svd": "genprop_cli.families.svd.tiny:build_random_tiny_pipeline"},
)
