"""Wan 2.x image-to-video (`WanTransformer3DModel`): a video DiT, in its 2.1 I2V and 2.2 TI2V layouts.

`backbone.py` wires the adapter into the DiT, `sampler.py` samples one chunk (flow matching, both
conditioning modes of `WanImageToVideoPipeline`), `objective.py` trains the adapter with rectified flow,
`tiny.py` builds the random-tiny DiTs of both layouts.
"""

from genprop_cli.families import Capabilities, Family

FAMILY = Family(
    name="wan",
    capabilities=Capabilities(vae_tiling=True, attention_backends=True, text=True),
    backbone_ref="genprop_cli.families.wan.backbone:WanBackbone",
    sampler_ref="genprop_cli.families.wan.sampler:GenPropWanPipeline",
    objective_ref="genprop_cli.families.wan.objective:flow_objective",
    tiny_refs={
        "wan": "genprop_cli.families.wan.tiny:build_random_tiny_wan_pipeline",
        "wan-ti2v": "genprop_cli.families.wan.tiny:build_random_tiny_ti2v_pipeline",
    },
)
