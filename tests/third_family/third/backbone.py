"""The third family's backbone: the SVD U-Net wiring under the family's own name."""

from genprop_cli.families.svd.backbone import SVDBackbone


class ThirdBackbone(SVDBackbone):
    family = "third"
